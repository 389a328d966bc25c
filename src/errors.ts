/**
 * The one error type that crosses layers. Every failure a client can see has a stable `code`;
 * `ERROR_TABLE` (the only place that knows HTTP) maps it to a status and to the Hub's
 * `X-Error-Code`, so huggingface_hub and @huggingface/hub raise the same exception they would
 * raise against huggingface.co.
 */
export type ErrorCode =
  | 'InvalidRepoId'
  | 'InvalidRevision'
  | 'InvalidPath'
  | 'InvalidRequest'
  | 'PayloadTooLarge'
  | 'RepoNotFound'
  | 'RepoUnauthenticated'
  | 'RevisionNotFound'
  | 'EntryNotFound'
  | 'GatedRepoUnauthenticated'
  | 'GatedRepoForbidden'
  | 'Forbidden'
  | 'RepoNotAllowed'
  | 'AccessKeyRequired'
  | 'ReadOnlyMirror'
  | 'RangeNotSatisfiable'
  | 'RateLimited'
  | 'UpstreamRejected'
  | 'UpstreamError'
  | 'UpstreamUnavailable'
  | 'UpstreamTimeout'
  | 'IntegrityError'
  | 'InsufficientStorage'
  | 'StorageUnavailable'
  | 'Overloaded'
  | 'NotSupported'
  | 'AdminTokenRequired'
  | 'ClusterSecretRequired'
  | 'ClusterSecretRejected'
  | 'NotFound'
  | 'Conflict'
  | 'Internal';

interface ErrorSpec {
  /** HTTP status sent to the client. */
  status: number;
  /** Value of `X-Error-Code`, when the Hub has one for this case (clients branch on it). */
  hubCode?: string;
}

/** code → HTTP. The single mapping table (design rule 7). */
export const ERROR_TABLE: Record<ErrorCode, ErrorSpec> = {
  InvalidRepoId: { status: 400, hubCode: 'InvalidRepoId' },
  InvalidRevision: { status: 400, hubCode: 'InvalidRevision' },
  InvalidPath: { status: 400, hubCode: 'InvalidPath' },
  InvalidRequest: { status: 400, hubCode: 'BadRequest' },
  PayloadTooLarge: { status: 413 },
  RepoNotFound: { status: 404, hubCode: 'RepoNotFound' },
  // The Hub answers an anonymous request for a missing or private repo with a bare 401. Python's
  // huggingface_hub only recognises that as "repo not found" on https:// URLs, so an http://
  // mirror must name the code explicitly.
  RepoUnauthenticated: { status: 401, hubCode: 'RepoNotFound' },
  RevisionNotFound: { status: 404, hubCode: 'RevisionNotFound' },
  EntryNotFound: { status: 404, hubCode: 'EntryNotFound' },
  GatedRepoUnauthenticated: { status: 401, hubCode: 'GatedRepo' },
  GatedRepoForbidden: { status: 403, hubCode: 'GatedRepo' },
  Forbidden: { status: 403 },
  // The operator's allowRepos/denyRepos policy refuses this repo (not an upstream answer).
  RepoNotAllowed: { status: 403, hubCode: 'RepoNotAllowed' },
  // accessKeys is set and the request carries none of them. No Hub code: it is not about a repo.
  AccessKeyRequired: { status: 401 },
  // A write (POST/PUT/PATCH/DELETE under /api/) on a mirror without `allowWrites`.
  ReadOnlyMirror: { status: 403, hubCode: 'ReadOnlyMirror' },
  RangeNotSatisfiable: { status: 416 },
  RateLimited: { status: 429 },
  // Any other 4xx upstream gave: passed through with upstream's status (never turned into 5xx).
  UpstreamRejected: { status: 400 },
  UpstreamError: { status: 502, hubCode: 'UpstreamError' },
  UpstreamUnavailable: { status: 503, hubCode: 'UpstreamUnavailable' },
  UpstreamTimeout: { status: 504, hubCode: 'UpstreamTimeout' },
  IntegrityError: { status: 502, hubCode: 'IntegrityError' },
  // The cache disk cannot take this file (free space, less `minFreeBytes` and the bytes promised to
  // fills in progress), or filled up during the download.
  InsufficientStorage: { status: 507, hubCode: 'InsufficientStorage' },
  // The blob store behind the local cache (an S3-compatible object store) did not answer in time
  // or failed: blobs with a local copy are still served, the others get this.
  StorageUnavailable: { status: 503, hubCode: 'StorageUnavailable' },
  // Every fill slot is busy and the queue is full (`maxConcurrentFills`, `maxQueuedFills`); the
  // error carries a Retry-After.
  Overloaded: { status: 503, hubCode: 'Overloaded' },
  NotSupported: { status: 501, hubCode: 'NotSupported' },
  // The operator API (`/admin/`) without its token (adminToken), or with another one.
  AdminTokenRequired: { status: 401 },
  // The replicas' internal endpoint (`/internal/v1/`) without the cluster secret, or with another one.
  ClusterSecretRequired: { status: 401, hubCode: 'ClusterSecretRequired' },
  ClusterSecretRejected: { status: 403, hubCode: 'ClusterSecretRejected' },
  // Operator API objects (a job, a repo the index does not know).
  NotFound: { status: 404 },
  // An operator request that contradicts the object's state (cancelling a finished job).
  Conflict: { status: 409 },
  Internal: { status: 500, hubCode: 'InternalError' },
};

export interface MirrorErrorOptions {
  /** Extra response headers that belong to this error (e.g. `X-Repo-Commit` on EntryNotFound, `Retry-After`). */
  headers?: Record<string, string>;
  /** Overrides the table's status; only for `UpstreamRejected`, which mirrors upstream's own 4xx. */
  status?: number;
  cause?: unknown;
}

export class MirrorError extends Error {
  readonly code: ErrorCode;
  readonly headers: Readonly<Record<string, string>>;
  readonly status: number;

  constructor(code: ErrorCode, message: string, options: MirrorErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'MirrorError';
    this.code = code;
    this.headers = options.headers ?? {};
    this.status = options.status ?? ERROR_TABLE[code].status;
  }
}

export function isMirrorError(err: unknown): err is MirrorError {
  return err instanceof MirrorError;
}
