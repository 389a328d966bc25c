/**
 * A scripted, in-process impersonation of huggingface.co for tests: one `node:http` server for
 * the Hub origin and a second one (another port, hence another origin) for the CDN that LFS
 * downloads are redirected to. Both listen on 127.0.0.1, port 0.
 *
 * What it answers follows the Hub's observed behaviour: `/resolve/` and `/raw/`
 * (regular files served directly with a git-sha1 `ETag`, LFS files answered with a `302` to a
 * signed-URL look-alike on the CDN plus `X-Linked-*` and Xet headers), the Xet file-info answer,
 * `/api/resolve-cache/`, repo info, paginated `tree`, `paths-info` (form and JSON), `refs`,
 * `commits`, `whoami-v2`, `xet-read-token`, and the Hub's error shapes (EntryNotFound,
 * RevisionNotFound, RepoNotFound / anonymous 401, GatedRepo 401/403).
 *
 * Tests script it with repos and commits, inject faults (throttle, stall, drop, wrong bytes,
 * short body, status codes, barriers, header delays, Range ignored or answered for other bytes),
 * and read back every request it saw.
 */
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { randomBytes } from 'node:crypto';
import { gitBlobSha1Hex, lfsPointer, sha1Hex, sha256Hex } from './content.js';

// ---------------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------------

/** Options of {@link startFakeHub}. */
export interface FakeHubOptions {
  /** Initial value of {@link FakeHub.treePageSize} (default 50). */
  treePageSize?: number;
  /** Initial value of {@link FakeHub.commitsPageSize} (default 50). */
  commitsPageSize?: number;
  /**
   * The IPv4 address both servers listen on and name in their URLs (default 127.0.0.1): e.g. a
   * test network's gateway, for mirrors in network namespaces (whose 127.0.0.1 is their own).
   */
  host?: string;
}

/** Hub repository type. URL prefixes: model none, `datasets/`, `spaces/`. */
export type RepoType = 'model' | 'dataset' | 'space';

/** Names a repository: `type` defaults to `'model'`; `id` is `org/name` or a legacy `name`. */
export interface RepoRef {
  type?: RepoType;
  id: string;
}

/** A repository to create with {@link FakeHub.addRepo}. */
export interface RepoSpec extends RepoRef {
  /** path → content of the first commit on `main`. */
  files: Record<string, Buffer>;
  /**
   * Gated repo: files need a token in `allowedTokens`, except `publicPaths`
   * (default `['README.md', '.gitattributes']`). Repo metadata stays public.
   */
  gated?: { allowedTokens: string[]; publicPaths?: string[] };
  /** Private repo: everything (API included) needs one of these tokens. */
  private?: { allowedTokens: string[] };
  /** Files of at least this size (default 10 KiB), or ending in `.safetensors`/`.bin`, are LFS. */
  lfsThreshold?: number;
  /**
   * Default `true`: LFS files carry `X-Xet-Hash` and the `xet-auth`/`xet-reconstruction-info`
   * `Link` relations on resolve, `xetHash` in tree/paths-info, and resolve answers the Xet
   * file-info JSON to `Accept: application/vnd.xet-fileinfo+json`.
   */
  xet?: boolean;
  /**
   * Default `false`. If `true`, resolving a regular file answers like the real Hub: `307` with a
   * relative `Location` to `/api/resolve-cache/{type}s/{repo}/{commit}/{path}?...`, which then
   * answers `200` with the file headers and body.
   */
  smallFileRedirect?: boolean;
}

/** Which of the two servers. */
export type ServerName = 'hub' | 'cdn';

/** One request seen by either server, in arrival order. */
export interface RecordedRequest {
  /** Sequence number (0-based, over both servers, never reset). */
  seq: number;
  server: ServerName;
  method: string;
  /** The raw request target (path + query) as received. */
  path: string;
  /** A copy of the request headers (lower-case names, as parsed by Node). */
  headers: Record<string, string | string[] | undefined>;
  /** Whether the request carried an `Authorization` header. */
  hasAuthorization: boolean;
  /** Address the connection came from (a proxy's outgoing address when the request went through one). */
  remoteAddress: string;
  /** Response status, once the headers were sent. */
  status?: number;
  /** Body bytes handed to the socket for this response so far. */
  bytesSent: number;
  /** `performance.now()` when the request arrived, and when its response closed (finished or cut). */
  startedAt: number;
  endedAt?: number;
}

/** Selects recorded requests; every given field must match. */
export interface RequestFilter {
  method: string;
  server: ServerName;
  /** Substring of the raw path, or of its percent-decoded form. */
  pathIncludes: string;
  /** Prefix of the raw path. */
  pathPrefix: string;
  status: number;
}

/** Selects the requests a fault applies to; every given field must match. */
export interface FaultMatch {
  server?: ServerName;
  /** Substring of the raw path, or of its percent-decoded form. */
  pathIncludes?: string;
  method?: string;
}

/** Pace the body at `bytesPerSecond` (token bucket, ~10 ms ticks, per response). */
export interface ThrottleFault {
  kind: 'throttle';
  bytesPerSecond: number;
  times?: number;
}
/** Send headers and `afterBytes` body bytes, then go silent for `ms` (default: forever). */
export interface StallFault {
  kind: 'stall';
  afterBytes: number;
  ms?: number;
  times?: number;
}
/** Destroy the socket after `afterBytes` body bytes. */
export interface DropFault {
  kind: 'drop';
  afterBytes: number;
  times?: number;
}
/** Same headers and length, different content (every byte flipped). */
export interface WrongBytesFault {
  kind: 'wrongBytes';
  times?: number;
}
/** `Content-Length` announces the full size but only `bytes` are sent, then the socket is ended. */
export interface ShortFault {
  kind: 'short';
  bytes: number;
  times?: number;
}
/** Answer `status` (with `Retry-After` if given) instead of the real answer. */
export interface StatusFault {
  kind: 'status';
  status: number;
  retryAfter?: number;
  /** More response headers (e.g. the Hub's `RateLimit`). */
  headers?: Record<string, string>;
  times?: number;
}
/**
 * Answer `status` (default 200) with this body and `Content-Type` (default `text/html`) instead of
 * the real answer: an upstream that is not the Hub it should be (a captive portal, a proxy's error
 * page, a wrong shape of JSON).
 */
export interface BodyFault {
  kind: 'body';
  body: string;
  contentType?: string;
  status?: number;
  times?: number;
}
/** Answer `status` (default 302) with this `Location` instead of the real answer (e.g. a resolve GET sent somewhere else). */
export interface RedirectFault {
  kind: 'redirect';
  location: string;
  status?: number;
  times?: number;
}
/**
 * The file "changed" upstream: content answers carry a different strong ETag, so an `If-Range`
 * with the old one no longer matches and a Range request gets the full 200 (RFC 9110 §13.1.5).
 */
export interface ChangedEtagFault {
  kind: 'changedEtag';
  times?: number;
}
/**
 * A satisfiable `Range` on file content is ignored: the answer is the whole file, `200` (as a
 * server without range support would give). Counted only on content answers that had a Range.
 */
export interface IgnoreRangeFault {
  kind: 'ignoreRange';
  times?: number;
}
/**
 * A satisfiable `Range` on file content is answered `206` with the bytes and `Content-Range` of
 * the span one byte further on (one byte back when it ends at the end of the file): a consistent
 * answer for other bytes than asked. Counted only on content answers that had a Range.
 */
export interface WrongContentRangeFault {
  kind: 'wrongContentRange';
  times?: number;
}
/** Pause the body at `atBytes` until the handle's `release()` is called. */
export interface BarrierFault {
  kind: 'barrier';
  atBytes: number;
  times?: number;
}
/** Wait `ms` before sending the response headers. */
export interface HeaderDelayFault {
  kind: 'headerDelay';
  ms: number;
  times?: number;
}
/**
 * Content answers carry the file's ETag as a weak validator (`W/"…"`), as a server that cannot
 * promise byte-identical ranges would: a client must not combine ranges of such answers.
 */
export interface WeakEtagFault {
  kind: 'weakEtag';
  times?: number;
}

/**
 * A scripted misbehaviour. `times` limits it to the first N matching requests (default: all).
 *
 * `status`, `body`, `redirect` and `headerDelay` apply to any matching request (give `redirect` a
 * `method: 'GET'` match to keep HEADs answering the file's metadata). The body faults (`throttle`,
 * `stall`, `drop`, `wrongBytes`, `short`, `barrier`) apply only to file-content bodies: a CDN
 * download, or the direct `200`/`206` body of a regular file (`/resolve/`, `/raw/`,
 * `/api/resolve-cache/`); they are counted against `times` only when such a body is sent.
 * Byte offsets are relative to the start of that response body. Several body faults may
 * apply to the same response (e.g. throttle + drop). `skip` leaves the first N matching requests
 * alone (e.g. a fault on the second segment of a download, not the first).
 *
 * `throttle` paces each response on its own: a client with several connections gets the rate on
 * each (a CDN's per-connection limit).
 */
export type Fault = (
  | ThrottleFault
  | StallFault
  | DropFault
  | WrongBytesFault
  | ShortFault
  | StatusFault
  | BodyFault
  | RedirectFault
  | ChangedEtagFault
  | IgnoreRangeFault
  | WrongContentRangeFault
  | BarrierFault
  | HeaderDelayFault
  | WeakEtagFault
) & { skip?: number };

/** Returned by {@link FakeHub.setFault}. */
export interface FaultHandle {
  /** Removes this fault (responses already affected keep their fate, except barriers: use release). */
  remove(): void;
  /** How many requests this fault has been applied to. */
  readonly applied: number;
}

/** Returned by {@link FakeHub.setFault} for a `barrier` fault. */
export interface BarrierHandle extends FaultHandle {
  /** Lets every held body continue, and every later one pass the barrier without stopping. */
  release(): void;
  /**
   * Resolves when the first body reached `atBytes` (all bytes before it were handed to the
   * socket), with that request: the one held (the order of `requests` need not be the order in
   * which concurrent requests met the fault).
   */
  reached: Promise<RecordedRequest>;
}

/** What the fake hub knows about one file at one revision (for test assertions). */
export interface FakeFileInfo {
  path: string;
  /** Commit the revision resolved to. */
  commit: string;
  size: number;
  sha256: string;
  /** Git blob sha1 of the content. */
  gitSha1: string;
  lfs: boolean;
  /** The etag clients should end up with: sha256 for LFS files, git sha1 otherwise (no quotes). */
  etag: string;
  /** Tree `oid`: git sha1 of the LFS pointer for LFS files, of the content otherwise. */
  oid: string;
  xetHash?: string;
  /** Path of the blob on the CDN server (LFS only). */
  cdnPath?: string;
  content: Buffer;
}

/** A running fake Hub + fake CDN. */
export interface FakeHub {
  /** Hub origin, `http://127.0.0.1:PORT`. */
  readonly url: string;
  /** CDN origin, `http://127.0.0.1:PORT2`. */
  readonly cdnUrl: string;
  /** Every request on both servers, in order (cleared in place by {@link FakeHub.resetCounters}). */
  readonly requests: RecordedRequest[];
  /** Tree listing page size (default 50). */
  treePageSize: number;
  /** Commit listing page size (default 50). */
  commitsPageSize: number;
  /** Seconds the signed CDN URLs stay valid (default 3600); the CDN answers 403 after that. */
  cdnUrlTtlSeconds: number;

  /** Creates a repo whose `main` has one commit with `spec.files`; returns that commit. */
  addRepo(spec: RepoSpec): { commit: string };
  /** Deletes a repo (later requests get the missing-repo answers). */
  deleteRepo(repo: RepoRef): void;
  /**
   * Makes a new commit on `branch` (default `main`; created from `main` if missing) with the
   * previous snapshot plus `files` (`null` deletes a path). Returns the new 40-hex sha.
   */
  commit(repo: RepoRef, files: Record<string, Buffer | null>, branch?: string): { commit: string };
  /** Creates or moves a branch to `commit` (default: the head of `main`). */
  addBranch(repo: RepoRef, name: string, commit?: string): void;
  /** Creates or moves a tag to `commit` (default: the head of `main`). */
  addTag(repo: RepoRef, name: string, commit?: string): void;
  /** Creates `refs/pr/{n}`: a commit on top of `main` with `files` applied (main does not move). */
  addPullRequest(repo: RepoRef, n: number, files: Record<string, Buffer | null>): { commit: string };
  /** The commit a revision resolves to (throws if it does not). */
  head(repo: RepoRef, revision?: string): string;
  /** What the hub holds for `path` at `revision` (default `main`); throws if absent. */
  fileInfo(repo: RepoRef, path: string, revision?: string): FakeFileInfo;
  /** Removes `token` from the repo's gated and private allow-lists (it stays a known token). */
  revoke(repo: RepoRef, token: string): void;
  /** Adds `token` to the repo's gated or private allow-list (whichever the repo has). */
  grant(repo: RepoRef, token: string): void;
  /** Makes `token` known to the hub (valid for whoami, 403 rather than 401 on gated files). */
  addKnownToken(token: string): void;

  /** Installs a fault; see {@link Fault}. Faults are tried in installation order. */
  setFault(match: FaultMatch, fault: BarrierFault & { skip?: number }): BarrierHandle;
  setFault(match: FaultMatch, fault: Fault): FaultHandle;
  /** Removes all faults and releases every barrier. */
  clearFaults(): void;

  /** Number of recorded requests matching `filter`. */
  count(filter?: Partial<RequestFilter>): number;
  /** Body bytes sent by the responses to matching requests. */
  bytesSent(filter?: Partial<RequestFilter>): number;
  /** Forgets recorded requests (empties {@link FakeHub.requests} in place). */
  resetCounters(): void;

  /** Closes both servers and destroys every open socket (simulates "upstream down"). */
  stop(): Promise<void>;
  /** Listens again on the same two ports after {@link FakeHub.stop} ("upstream is back"). */
  restart(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Constants
// ---------------------------------------------------------------------------------------------

const DEFAULT_LFS_THRESHOLD = 10 * 1024;
const DEFAULT_PUBLIC_PATHS = ['README.md', '.gitattributes'];
const CHUNK_SIZE = 64 * 1024;
const MAX_REQUEST_BODY = 10 * 1024 * 1024;
const XET_FILEINFO_TYPE = 'application/vnd.xet-fileinfo+json';
const JSON_TYPE = 'application/json; charset=utf-8';
const TEXT_TYPE = 'text/plain; charset=utf-8';
const CAS_URL = 'https://cas-server.example';
const EXPOSE_HEADERS =
  'X-Repo-Commit,X-Request-Id,X-Error-Code,X-Error-Message,X-Total-Count,ETag,Link,Accept-Ranges,Content-Range,X-Linked-Size,X-Linked-ETag,X-Xet-Hash';
const BASE_DATE_MS = Date.UTC(2025, 0, 1);
const LAST_MODIFIED = new Date(BASE_DATE_MS).toUTCString();
const HEX40 = /^[0-9a-f]{40}$/;
const API_MARKERS = new Set([
  'revision',
  'tree',
  'paths-info',
  'refs',
  'commits',
  'xet-read-token',
  'auth-check',
]);
const FILE_MARKERS = new Set(['resolve', 'raw']);
const BODY_FAULT_KINDS = new Set<Fault['kind']>(['throttle', 'stall', 'drop', 'wrongBytes', 'short', 'barrier']);

const PLURAL: Record<RepoType, string> = { model: 'models', dataset: 'datasets', space: 'spaces' };
const URL_PREFIX: Record<RepoType, string> = { model: '', dataset: 'datasets/', space: 'spaces/' };

// ---------------------------------------------------------------------------------------------
// Internal model
// ---------------------------------------------------------------------------------------------

/** A content's digests; the git sha1 is computed on first use (an LFS file's is rarely asked for). */
interface Digests {
  sha256: string;
  readonly gitSha1: string;
}

interface StoredFile {
  content: Buffer;
  size: number;
  sha256: string;
  readonly gitSha1: string;
  lfs: boolean;
  pointer?: Buffer;
  pointerSha1?: string;
  xetHash?: string;
  cdnPath?: string;
}

interface Commit {
  id: string;
  parent: string | undefined;
  title: string;
  message: string;
  date: Date;
  files: Map<string, StoredFile>;
}

interface Repo {
  type: RepoType;
  id: string;
  commits: Map<string, Commit>;
  branches: Map<string, string>;
  tags: Map<string, string>;
  prs: Map<number, string>;
  gated: { allowedTokens: Set<string>; publicPaths: Set<string> } | undefined;
  private: { allowedTokens: Set<string> } | undefined;
  lfsThreshold: number;
  xet: boolean;
  smallFileRedirect: boolean;
  seq: number;
  createdAt: Date;
}

interface ActiveFault {
  match: FaultMatch;
  fault: Fault;
  applied: number;
  /** Matching requests seen (skipped ones included). */
  seen: number;
  removed: boolean;
  barrier?: BarrierState;
}

interface BarrierState {
  released: boolean;
  waiters: Array<() => void>;
  reachedOnce: boolean;
  resolveReached: (rec: RecordedRequest) => void;
  reached: Promise<RecordedRequest>;
}

interface Ctx {
  server: ServerName;
  req: IncomingMessage;
  res: ServerResponse;
  rec: RecordedRequest;
  method: string;
  rawPath: string;
  pathname: string;
  query: URLSearchParams;
  token: string | undefined;
  isClosed: boolean;
  closed: Promise<void>;
}

type TreeEntry =
  | { kind: 'file'; path: string; file: StoredFile }
  | { kind: 'directory'; path: string };

type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue | undefined };

/** An error answer, thrown by route handlers. */
class HubError extends Error {
  constructor(
    readonly status: number,
    readonly errorCode: string | undefined,
    message: string,
    readonly body: 'json' | 'text' = 'json',
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
  }
}

// ---------------------------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------------------------

function repoType(repo: RepoRef): RepoType {
  return repo.type ?? 'model';
}

function repoKey(type: RepoType, id: string): string {
  return `${type}:${id}`;
}

function randomHex(bytes: number): string {
  return randomBytes(bytes).toString('hex');
}

function decodeSegment(seg: string): string {
  try {
    return decodeURIComponent(seg);
  } catch {
    throw new HubError(400, 'BadRequest', 'Invalid URL encoding', 'json');
  }
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** Makes a string usable as a header value (Node throws on CR/LF and chars above U+00FF). */
function headerSafe(value: string): string {
  return value.replace(/[^\t\x20-\x7e]/g, (c) => encodeURIComponent(c));
}

function encodePath(path: string): string {
  return path.split('/').map(encodeURIComponent).join('/');
}

function contentDisposition(path: string): string {
  const name = path.split('/').pop() ?? path;
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, '_');
  return `inline; filename*=UTF-8''${encodeURIComponent(name)}; filename="${ascii}";`;
}

function isText(buf: Buffer): boolean {
  return !buf.subarray(0, 8192).includes(0);
}

function truthy(value: string | null | undefined): boolean {
  return value === 'true' || value === '1' || value === 'True';
}

function bearerToken(req: IncomingMessage): string | undefined {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(.+)$/i.exec(h.trim());
  return m?.[1]?.trim() || undefined;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

type RangeResult = { start: number; end: number } | 'unsatisfiable' | undefined;

/** Parses a single `bytes=` range (end inclusive). Unparseable or multi-range → ignored. */
function parseRange(header: string | undefined, size: number): RangeResult {
  if (header === undefined) return undefined;
  const m = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header);
  if (!m) return undefined;
  const a = m[1] ?? '';
  const b = m[2] ?? '';
  if (a === '' && b === '') return undefined;
  if (a === '') {
    const n = b.length > 15 ? Number.MAX_SAFE_INTEGER : Number(b);
    if (n === 0 || size === 0) return 'unsatisfiable';
    return { start: Math.max(0, size - n), end: size - 1 };
  }
  const start = a.length > 15 ? Number.MAX_SAFE_INTEGER : Number(a);
  const end = b === '' ? size - 1 : b.length > 15 ? Number.MAX_SAFE_INTEGER : Number(b);
  if (b !== '' && end < start) return undefined;
  if (start >= size) return 'unsatisfiable';
  return { start, end: Math.min(end, size - 1) };
}

function flipBytes(chunk: Buffer): Buffer {
  const out = Buffer.allocUnsafe(chunk.length);
  for (let i = 0; i < chunk.length; i++) out[i] = (chunk[i] ?? 0) ^ 0xff;
  return out;
}

function matchesPath(rawPath: string, needle: string): boolean {
  return rawPath.includes(needle) || safeDecode(rawPath).includes(needle);
}

/** Token bucket anchored on the first byte, topped up continuously, checked every ≤10 ms. */
class Pacer {
  private t0 = -1;
  private granted = 0;

  constructor(private readonly rate: number) {}

  /** Waits until some bytes may be sent; returns how many (1..want), or 0 if `stopped()`. */
  async take(want: number, stopped: () => boolean): Promise<number> {
    if (this.t0 < 0) this.t0 = performance.now();
    const threshold = Math.max(1, Math.min(want, Math.floor(this.rate / 100)));
    const burst = Math.max(threshold, Math.floor(this.rate / 50));
    for (;;) {
      if (stopped()) return 0;
      const now = performance.now();
      let allowed = Math.floor((this.rate * (now - this.t0)) / 1000) - this.granted;
      if (allowed > burst) {
        // The body was held up (backpressure, barrier, stall): do not let credit pile up.
        this.t0 = now - ((this.granted + burst) / this.rate) * 1000;
        allowed = burst;
      }
      if (allowed >= threshold) {
        const n = Math.min(want, allowed);
        this.granted += n;
        return n;
      }
      const waitMs = ((this.granted + threshold) / this.rate) * 1000 - (now - this.t0);
      await sleep(Math.min(10, Math.max(1, Math.ceil(waitMs))));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The fake hub
// ---------------------------------------------------------------------------------------------

class FakeHubImpl implements FakeHub {
  url = '';
  cdnUrl = '';
  readonly requests: RecordedRequest[] = [];
  treePageSize: number;
  commitsPageSize: number;
  cdnUrlTtlSeconds = 3600;

  private readonly repos = new Map<string, Repo>();
  private readonly digestCache = new WeakMap<Buffer, Digests>();
  private readonly cdnBlobs = new Map<string, StoredFile>();
  private readonly knownTokens = new Set<string>();
  private faults: ActiveFault[] = [];
  private seqCounter = 0;
  private commitCounter = 0;
  private servers: { hub: Server; cdn: Server } | undefined;
  private readonly sockets = new Set<Socket>();
  private ports = { hub: 0, cdn: 0 };

  /** The address both servers listen on and name in their URLs. */
  private readonly host: string;

  constructor(opts: FakeHubOptions) {
    this.host = opts.host ?? '127.0.0.1';
    this.treePageSize = opts.treePageSize ?? 50;
    this.commitsPageSize = opts.commitsPageSize ?? 50;
  }

  // ------------------------------------------------------------------ lifecycle

  async listen(): Promise<void> {
    const hub = this.makeServer('hub');
    const cdn = this.makeServer('cdn');
    const host = this.host;
    this.ports.hub = await listenOn(hub, this.ports.hub, host);
    this.ports.cdn = await listenOn(cdn, this.ports.cdn, host);
    this.servers = { hub, cdn };
    this.url = `http://${host}:${this.ports.hub}`;
    this.cdnUrl = `http://${host}:${this.ports.cdn}`;
  }

  private makeServer(name: ServerName): Server {
    const server = createServer((req, res) => {
      this.handle(name, req, res).catch((err: unknown) => {
        if (!res.headersSent) {
          const msg = err instanceof Error ? err.message : String(err);
          res.writeHead(500, { 'Content-Type': TEXT_TYPE });
          res.end(`fake hub internal error: ${msg}`);
        } else {
          res.destroy();
        }
      });
    });
    server.keepAliveTimeout = 5_000;
    server.on('connection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
    return server;
  }

  async stop(): Promise<void> {
    const servers = this.servers;
    this.servers = undefined;
    if (!servers) return;
    const closing = [servers.hub, servers.cdn].map(
      (s) => new Promise<void>((resolve) => s.close(() => resolve())),
    );
    for (const socket of this.sockets) socket.destroy();
    this.sockets.clear();
    await Promise.all(closing);
  }

  async restart(): Promise<void> {
    if (this.servers) return;
    await this.listen();
  }

  // ------------------------------------------------------------------ scripting

  addRepo(spec: RepoSpec): { commit: string } {
    const type = repoType(spec);
    const key = repoKey(type, spec.id);
    if (!/^[^/]+(\/[^/]+)?$/.test(spec.id)) throw new Error(`invalid repo id ${spec.id}`);
    if (this.repos.has(key)) throw new Error(`repo ${key} already exists`);
    const repo: Repo = {
      type,
      id: spec.id,
      commits: new Map(),
      branches: new Map(),
      tags: new Map(),
      prs: new Map(),
      gated: spec.gated && {
        allowedTokens: new Set(spec.gated.allowedTokens),
        publicPaths: new Set(spec.gated.publicPaths ?? DEFAULT_PUBLIC_PATHS),
      },
      private: spec.private && { allowedTokens: new Set(spec.private.allowedTokens) },
      lfsThreshold: spec.lfsThreshold ?? DEFAULT_LFS_THRESHOLD,
      xet: spec.xet ?? true,
      smallFileRedirect: spec.smallFileRedirect ?? false,
      seq: 0,
      createdAt: this.nextDate(),
    };
    for (const t of spec.gated?.allowedTokens ?? []) this.knownTokens.add(t);
    for (const t of spec.private?.allowedTokens ?? []) this.knownTokens.add(t);
    this.repos.set(key, repo);
    const c = this.makeCommit(repo, undefined, spec.files, 'Initial commit');
    repo.branches.set('main', c.id);
    return { commit: c.id };
  }

  deleteRepo(ref: RepoRef): void {
    this.repos.delete(repoKey(repoType(ref), ref.id));
  }

  commit(ref: RepoRef, files: Record<string, Buffer | null>, branch = 'main'): { commit: string } {
    const repo = this.mustRepo(ref);
    const parent = repo.branches.get(branch) ?? repo.branches.get('main');
    const c = this.makeCommit(repo, parent, files, `Update ${Object.keys(files).join(', ')}`);
    repo.branches.set(branch, c.id);
    return { commit: c.id };
  }

  addBranch(ref: RepoRef, name: string, commit?: string): void {
    const repo = this.mustRepo(ref);
    repo.branches.set(name, this.mustCommit(repo, commit));
  }

  addTag(ref: RepoRef, name: string, commit?: string): void {
    const repo = this.mustRepo(ref);
    repo.tags.set(name, this.mustCommit(repo, commit));
  }

  addPullRequest(ref: RepoRef, n: number, files: Record<string, Buffer | null>): { commit: string } {
    const repo = this.mustRepo(ref);
    const c = this.makeCommit(repo, repo.branches.get('main'), files, `PR #${n}`);
    repo.prs.set(n, c.id);
    return { commit: c.id };
  }

  head(ref: RepoRef, revision = 'main'): string {
    const repo = this.mustRepo(ref);
    const c = this.resolveRev(repo, revision);
    if (!c) throw new Error(`revision ${revision} not found in ${ref.id}`);
    return c.id;
  }

  fileInfo(ref: RepoRef, path: string, revision = 'main'): FakeFileInfo {
    const repo = this.mustRepo(ref);
    const c = this.resolveRev(repo, revision);
    if (!c) throw new Error(`revision ${revision} not found in ${ref.id}`);
    const f = c.files.get(path);
    if (!f) throw new Error(`${path} not found at ${revision} in ${ref.id}`);
    const info: FakeFileInfo = {
      path,
      commit: c.id,
      size: f.size,
      sha256: f.sha256,
      gitSha1: f.gitSha1,
      lfs: f.lfs,
      etag: f.lfs ? f.sha256 : f.gitSha1,
      oid: f.pointerSha1 ?? f.gitSha1,
      content: f.content,
    };
    if (f.xetHash && repo.xet) info.xetHash = f.xetHash;
    if (f.cdnPath) info.cdnPath = f.cdnPath;
    return info;
  }

  revoke(ref: RepoRef, token: string): void {
    const repo = this.mustRepo(ref);
    repo.gated?.allowedTokens.delete(token);
    repo.private?.allowedTokens.delete(token);
  }

  grant(ref: RepoRef, token: string): void {
    const repo = this.mustRepo(ref);
    repo.gated?.allowedTokens.add(token);
    repo.private?.allowedTokens.add(token);
    this.knownTokens.add(token);
  }

  addKnownToken(token: string): void {
    this.knownTokens.add(token);
  }

  setFault(match: FaultMatch, fault: BarrierFault & { skip?: number }): BarrierHandle;
  setFault(match: FaultMatch, fault: Fault): FaultHandle;
  setFault(match: FaultMatch, fault: Fault): FaultHandle | BarrierHandle {
    const active: ActiveFault = { match: { ...match }, fault: { ...fault }, applied: 0, seen: 0, removed: false };
    const remove = (): void => {
      active.removed = true;
      this.faults = this.faults.filter((f) => f !== active);
    };
    this.faults.push(active);
    if (fault.kind !== 'barrier') {
      return {
        remove,
        get applied() {
          return active.applied;
        },
      };
    }
    let resolveReached: (rec: RecordedRequest) => void = () => undefined;
    const reached = new Promise<RecordedRequest>((resolve) => {
      resolveReached = resolve;
    });
    const state: BarrierState = { released: false, waiters: [], reachedOnce: false, resolveReached, reached };
    active.barrier = state;
    return {
      remove,
      get applied() {
        return active.applied;
      },
      release: () => releaseBarrier(state),
      reached,
    };
  }

  clearFaults(): void {
    for (const f of this.faults) {
      f.removed = true;
      if (f.barrier) releaseBarrier(f.barrier);
    }
    this.faults = [];
  }

  count(filter: Partial<RequestFilter> = {}): number {
    return this.requests.filter((r) => matchesFilter(r, filter)).length;
  }

  bytesSent(filter: Partial<RequestFilter> = {}): number {
    let total = 0;
    for (const r of this.requests) if (matchesFilter(r, filter)) total += r.bytesSent;
    return total;
  }

  resetCounters(): void {
    this.requests.length = 0;
  }

  // ------------------------------------------------------------------ model internals

  private mustRepo(ref: RepoRef): Repo {
    const repo = this.repos.get(repoKey(repoType(ref), ref.id));
    if (!repo) throw new Error(`no repo ${repoType(ref)} ${ref.id}`);
    return repo;
  }

  private mustCommit(repo: Repo, commit: string | undefined): string {
    const id = commit ?? repo.branches.get('main');
    if (!id || !repo.commits.has(id)) throw new Error(`no commit ${String(commit)} in ${repo.id}`);
    return id;
  }

  private nextDate(): Date {
    return new Date(BASE_DATE_MS + ++this.commitCounter * 60_000);
  }

  private digests(buf: Buffer): Digests {
    let d = this.digestCache.get(buf);
    if (!d) {
      let gitSha1: string | undefined;
      d = {
        sha256: sha256Hex(buf),
        get gitSha1() {
          return (gitSha1 ??= gitBlobSha1Hex(buf));
        },
      };
      this.digestCache.set(buf, d);
    }
    return d;
  }

  private storeFile(repo: Repo, path: string, content: Buffer): StoredFile {
    const digests = this.digests(content);
    const sha256 = digests.sha256;
    const lfs = content.length >= repo.lfsThreshold || /\.(safetensors|bin)$/.test(path);
    const file: StoredFile = {
      content,
      size: content.length,
      sha256,
      get gitSha1() {
        return digests.gitSha1;
      },
      lfs,
    };
    if (lfs) {
      file.pointer = lfsPointer(sha256, content.length);
      file.pointerSha1 = gitBlobSha1Hex(file.pointer);
      file.xetHash = sha256Hex(Buffer.from(`xet:${sha256}`));
      const repoHash = sha1Hex(`${repo.type}/${repo.id}`).slice(0, 16);
      file.cdnPath = `/repos/${repoHash.slice(0, 2)}/${repoHash}/${sha256}`;
      this.cdnBlobs.set(file.cdnPath, file);
    }
    return file;
  }

  private makeCommit(
    repo: Repo,
    parentId: string | undefined,
    changes: Record<string, Buffer | null>,
    title: string,
  ): Commit {
    const parent = parentId ? repo.commits.get(parentId) : undefined;
    const files = new Map<string, StoredFile>(parent?.files ?? []);
    for (const [rawPath, content] of Object.entries(changes)) {
      const path = rawPath.replace(/^\/+|\/+$/g, '');
      if (!path) throw new Error(`invalid file path ${JSON.stringify(rawPath)}`);
      if (content === null) files.delete(path);
      else files.set(path, this.storeFile(repo, path, content));
    }
    repo.seq++;
    const listing = [...files.entries()]
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([p, f]) => `${p}\0${f.pointerSha1 ?? f.gitSha1}\n`)
      .join('');
    const id = sha1Hex(`fakehub-commit\n${repo.type}/${repo.id}\n${parentId ?? ''}\n${repo.seq}\n${listing}`);
    const commit: Commit = { id, parent: parentId, title, message: `${title}\n`, date: this.nextDate(), files };
    repo.commits.set(id, commit);
    return commit;
  }

  private resolveRev(repo: Repo, rev: string): Commit | undefined {
    let id: string | undefined;
    if (rev === 'HEAD') id = repo.branches.get('main');
    else if (repo.branches.has(rev)) id = repo.branches.get(rev);
    else if (repo.tags.has(rev)) id = repo.tags.get(rev);
    else if (rev.startsWith('refs/heads/')) id = repo.branches.get(rev.slice('refs/heads/'.length));
    else if (rev.startsWith('refs/tags/')) id = repo.tags.get(rev.slice('refs/tags/'.length));
    else {
      const pr = /^refs\/pr\/(\d+)$/.exec(rev);
      if (pr) id = repo.prs.get(Number(pr[1]));
      else if (HEX40.test(rev)) id = rev;
    }
    return id ? repo.commits.get(id) : undefined;
  }

  private isKnownToken(token: string): boolean {
    return token.startsWith('hf_valid') || this.knownTokens.has(token);
  }

  // ------------------------------------------------------------------ request handling

  private async handle(server: ServerName, req: IncomingMessage, res: ServerResponse): Promise<void> {
    const rawPath = req.url ?? '/';
    const method = (req.method ?? 'GET').toUpperCase();
    const rec: RecordedRequest = {
      seq: this.seqCounter++,
      server,
      method,
      path: rawPath,
      headers: { ...req.headers },
      hasAuthorization: req.headers.authorization !== undefined,
      remoteAddress: req.socket.remoteAddress ?? '',
      bytesSent: 0,
      startedAt: performance.now(),
    };
    this.requests.push(rec);
    const q = rawPath.indexOf('?');
    const ctx: Ctx = {
      server,
      req,
      res,
      rec,
      method,
      rawPath,
      pathname: q >= 0 ? rawPath.slice(0, q) : rawPath,
      query: new URLSearchParams(q >= 0 ? rawPath.slice(q + 1) : ''),
      token: bearerToken(req),
      isClosed: false,
      closed: Promise.resolve(),
    };
    ctx.closed = new Promise<void>((resolve) => {
      res.once('close', () => {
        rec.endedAt = performance.now();
        ctx.isClosed = true;
        if (rec.status === undefined && res.headersSent) rec.status = res.statusCode;
        resolve();
      });
    });
    res.setHeader('X-Request-Id', `Root=1-${randomHex(4)}-${randomHex(12)}`);
    res.setHeader('Access-Control-Expose-Headers', EXPOSE_HEADERS);
    res.setHeader('Vary', 'Origin, Accept');

    const delays = this.takeFaults(ctx, new Set(['headerDelay']));
    const delayMs = delays.reduce((sum, f) => sum + (f.fault.kind === 'headerDelay' ? f.fault.ms : 0), 0);
    if (delayMs > 0) await Promise.race([sleep(delayMs), ctx.closed]);
    if (ctx.isClosed) return;

    const [statusFault] = this.takeFaults(ctx, new Set(['status']), 1);
    if (statusFault && statusFault.fault.kind === 'status') {
      const f = statusFault.fault;
      const headers: Record<string, string> = { 'X-Error-Message': `Injected fault: status ${f.status}` };
      if (f.retryAfter !== undefined) headers['Retry-After'] = String(f.retryAfter);
      Object.assign(headers, f.headers);
      this.sendJson(ctx, f.status, { error: `Injected fault: status ${f.status}` }, headers);
      return;
    }

    const [bodyFault] = this.takeFaults(ctx, new Set(['body']), 1);
    if (bodyFault && bodyFault.fault.kind === 'body') {
      const { body, contentType = 'text/html; charset=utf-8', status = 200 } = bodyFault.fault;
      this.sendBuffer(ctx, status, { 'Content-Type': contentType }, Buffer.from(body));
      return;
    }

    const [redirectFault] = this.takeFaults(ctx, new Set(['redirect']), 1);
    if (redirectFault && redirectFault.fault.kind === 'redirect') {
      const { location, status = 302 } = redirectFault.fault;
      this.sendText(ctx, status, `Found. Redirecting to ${location}`, { Location: location });
      return;
    }

    try {
      if (server === 'cdn') await this.routeCdn(ctx);
      else await this.routeHub(ctx);
    } catch (err) {
      if (!(err instanceof HubError)) throw err;
      if (ctx.res.headersSent) {
        ctx.res.destroy();
        return;
      }
      const headers: Record<string, string> = { ...err.headers };
      if (err.errorCode) headers['X-Error-Code'] = err.errorCode;
      headers['X-Error-Message'] = headerSafe(err.message);
      if (err.body === 'text') this.sendText(ctx, err.status, err.message, headers);
      else this.sendJson(ctx, err.status, { error: err.message }, headers);
    }
  }

  /** Consumes (counts) and returns the matching faults of the given kinds. */
  private takeFaults(ctx: Ctx, kinds: Set<Fault['kind']>, max = Infinity): ActiveFault[] {
    const out: ActiveFault[] = [];
    for (const f of this.faults) {
      if (out.length >= max) break;
      if (f.removed || !kinds.has(f.fault.kind)) continue;
      if (f.fault.times !== undefined && f.applied >= f.fault.times) continue;
      const m = f.match;
      if (m.server && m.server !== ctx.server) continue;
      if (m.method && m.method.toUpperCase() !== ctx.method) continue;
      if (m.pathIncludes !== undefined && !matchesPath(ctx.rawPath, m.pathIncludes)) continue;
      if (f.seen++ < (f.fault.skip ?? 0)) continue;
      f.applied++;
      out.push(f);
    }
    return out;
  }

  // ------------------------------------------------------------------ response helpers

  private sendBuffer(ctx: Ctx, status: number, headers: Record<string, string>, body: Buffer): void {
    ctx.res.writeHead(status, { ...headers, 'Content-Length': String(body.length) });
    ctx.rec.status = status;
    if (ctx.method === 'HEAD') {
      ctx.res.end();
    } else {
      ctx.rec.bytesSent += body.length;
      ctx.res.end(body);
    }
  }

  private sendText(ctx: Ctx, status: number, text: string, headers: Record<string, string> = {}): void {
    this.sendBuffer(ctx, status, { 'Content-Type': TEXT_TYPE, ...headers }, Buffer.from(text));
  }

  private sendJson(ctx: Ctx, status: number, value: unknown, headers: Record<string, string> = {}): void {
    this.sendBuffer(ctx, status, { 'Content-Type': JSON_TYPE, ...headers }, Buffer.from(JSON.stringify(value)));
  }

  /**
   * Serves file content with conditional/Range handling: 304 on a matching If-None-Match, 206
   * for one satisfiable range (unless If-Range does not match), 416 with `bytes * /size`.
   */
  private async serveContent(
    ctx: Ctx,
    content: Buffer,
    etag: string,
    headers: Record<string, string>,
  ): Promise<void> {
    const size = content.length;
    if (this.takeFaults(ctx, new Set(['changedEtag']), 1).length > 0) etag = `"changed-${etag.replace(/"/g, '')}"`;
    if (this.takeFaults(ctx, new Set(['weakEtag']), 1).length > 0) etag = `W/${etag}`;
    const base: Record<string, string> = { ...headers, ETag: etag, 'Accept-Ranges': 'bytes' };
    const inm = ctx.req.headers['if-none-match'];
    if (inm !== undefined && inm.split(',').some((t) => t.trim() === etag || t.trim() === `W/${etag}` || t.trim() === '*')) {
      ctx.res.writeHead(304, base);
      ctx.rec.status = 304;
      ctx.res.end();
      return;
    }
    let range = parseRange(ctx.req.headers.range, size);
    const ifRangeHeader = ctx.req.headers['if-range'];
    const ifRange = Array.isArray(ifRangeHeader) ? ifRangeHeader[0] : ifRangeHeader;
    if (range !== undefined && ifRange !== undefined) {
      const v = ifRange.trim();
      const ok = v.startsWith('"') ? v === etag : v.startsWith('W/') ? false : v === LAST_MODIFIED;
      if (!ok) range = undefined;
    }
    if (range === 'unsatisfiable') {
      this.sendBuffer(ctx, 416, { ...base, 'Content-Range': `bytes */${size}`, 'Content-Type': TEXT_TYPE }, Buffer.alloc(0));
      return;
    }
    if (range && this.takeFaults(ctx, new Set(['ignoreRange']), 1).length > 0) range = undefined;
    if (range && this.takeFaults(ctx, new Set(['wrongContentRange']), 1).length > 0) {
      const shift = range.end + 1 < size ? 1 : -1;
      range = { start: Math.max(0, range.start + shift), end: range.end + shift };
    }
    const start = range ? range.start : 0;
    const end = range ? range.end + 1 : size;
    const status = range ? 206 : 200;
    const out: Record<string, string> = { ...base, 'Content-Length': String(end - start) };
    if (range) out['Content-Range'] = `bytes ${start}-${end - 1}/${size}`;
    ctx.res.writeHead(status, out);
    ctx.rec.status = status;
    if (ctx.method === 'HEAD') {
      ctx.res.end();
      return;
    }
    await this.writeBody(ctx, content, start, end);
  }

  /** Writes `content[start, end)` in ≤64 KiB slices honouring backpressure and body faults. */
  private async writeBody(ctx: Ctx, content: Buffer, start: number, end: number): Promise<void> {
    const { res, rec } = ctx;
    const faults = this.takeFaults(ctx, BODY_FAULT_KINDS);
    const length = end - start;
    let pacer: Pacer | undefined;
    let wrong = false;
    type Event =
      | { at: number; kind: 'stall'; ms: number | undefined }
      | { at: number; kind: 'drop' }
      | { at: number; kind: 'short' }
      | { at: number; kind: 'barrier'; state: BarrierState };
    const events: Event[] = [];
    for (const af of faults) {
      const f = af.fault;
      switch (f.kind) {
        case 'throttle':
          pacer = new Pacer(Math.max(1, f.bytesPerSecond));
          break;
        case 'wrongBytes':
          wrong = true;
          break;
        case 'stall':
          events.push({ at: f.afterBytes, kind: 'stall', ms: f.ms });
          break;
        case 'drop':
          events.push({ at: f.afterBytes, kind: 'drop' });
          break;
        case 'short':
          events.push({ at: f.bytes, kind: 'short' });
          break;
        case 'barrier':
          if (af.barrier) events.push({ at: f.atBytes, kind: 'barrier', state: af.barrier });
          break;
        default:
          break;
      }
    }
    const pending = events.filter((e) => e.at <= length).sort((a, b) => a.at - b.at);
    if (pending.length > 0) res.flushHeaders();

    let pos = 0;
    let ei = 0;
    const stopped = (): boolean => ctx.isClosed;
    for (;;) {
      while (ei < pending.length && (pending[ei]?.at ?? Infinity) <= pos) {
        const ev = pending[ei++];
        if (!ev) break;
        if (ev.kind === 'stall') {
          await this.waitFlushed(ctx);
          if (ev.ms === undefined) {
            await ctx.closed;
            return;
          }
          await Promise.race([sleep(ev.ms), ctx.closed]);
        } else if (ev.kind === 'drop') {
          await this.waitFlushed(ctx);
          res.socket?.destroy();
          return;
        } else if (ev.kind === 'short') {
          await this.waitFlushed(ctx);
          const socket = res.socket;
          if (socket) {
            socket.end();
            setTimeout(() => socket.destroy(), 1_000).unref();
          }
          return;
        } else {
          await this.waitFlushed(ctx);
          const state = ev.state;
          if (!state.reachedOnce) {
            state.reachedOnce = true;
            state.resolveReached(ctx.rec);
          }
          if (!state.released) {
            await Promise.race([new Promise<void>((resolve) => state.waiters.push(resolve)), ctx.closed]);
          }
        }
        if (stopped()) return;
      }
      if (pos >= length || stopped()) break;
      const nextAt = pending[ei]?.at ?? Infinity;
      let n = Math.min(CHUNK_SIZE, length - pos, nextAt - pos);
      if (pacer) {
        n = await pacer.take(n, stopped);
        if (n === 0 || stopped()) return;
      }
      let chunk = content.subarray(start + pos, start + pos + n);
      if (wrong) chunk = flipBytes(chunk);
      rec.bytesSent += n;
      pos += n;
      if (!res.write(chunk)) {
        await Promise.race([new Promise<void>((resolve) => res.once('drain', () => resolve())), ctx.closed]);
      }
    }
    if (!stopped()) res.end();
  }

  /** Waits until everything written so far has been handed to the kernel (max 2 s). */
  private async waitFlushed(ctx: Ctx): Promise<void> {
    const deadline = Date.now() + 2_000;
    for (;;) {
      const socket = ctx.res.socket;
      if (ctx.isClosed || !socket || socket.destroyed) return;
      if (socket.writableLength === 0 && ctx.res.writableLength === 0) return;
      if (Date.now() > deadline) return;
      await sleep(1);
    }
  }

  // ------------------------------------------------------------------ CDN

  private async routeCdn(ctx: Ctx): Promise<void> {
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') {
      this.sendBuffer(ctx, 405, { 'Content-Type': 'application/xml' }, Buffer.from('<Error><Code>MethodNotAllowed</Code></Error>'));
      return;
    }
    const file = this.cdnBlobs.get(ctx.pathname);
    if (!file) {
      this.sendBuffer(ctx, 404, { 'Content-Type': 'application/xml' }, Buffer.from('<Error><Code>NoSuchKey</Code></Error>'));
      return;
    }
    const expires = Number(ctx.query.get('Expires') ?? 'NaN');
    if (!ctx.query.has('X-Amz-Signature') || !Number.isFinite(expires) || Date.now() / 1000 > expires) {
      this.sendBuffer(
        ctx,
        403,
        { 'Content-Type': 'application/xml' },
        Buffer.from('<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>'),
      );
      return;
    }
    await this.serveContent(ctx, file.content, `"${file.sha256}"`, {
      'Content-Type': 'application/octet-stream',
      'Last-Modified': LAST_MODIFIED,
      'Cache-Control': 'public, max-age=604800, immutable',
      'X-Cache': 'Miss from cloudfront',
    });
  }

  private signedCdnUrl(file: StoredFile): string {
    const expires = Math.floor(Date.now() / 1000 + this.cdnUrlTtlSeconds);
    const q = new URLSearchParams({
      'X-Amz-Algorithm': 'AWS4-HMAC-SHA256',
      'X-Amz-Credential': 'FAKEHUB/us-east-1/s3/aws4_request',
      'X-Amz-Expires': String(this.cdnUrlTtlSeconds),
      'X-Amz-Signature': randomHex(32),
      Expires: String(expires),
    });
    return `${this.cdnUrl}${file.cdnPath ?? ''}?${q.toString()}`;
  }

  // ------------------------------------------------------------------ Hub routing

  private async routeHub(ctx: Ctx): Promise<void> {
    const segs = ctx.pathname.split('/').slice(1);
    if (segs[0] === 'api') {
      const what = segs[1];
      if (what === 'whoami-v2' && segs.length === 2) return this.whoami(ctx);
      if (what === 'resolve-cache') return this.resolveCache(ctx, segs.slice(2));
      const type = pluralToType(what);
      if (type) return this.routeApiRepo(ctx, type, segs.slice(2));
      throw new HubError(404, undefined, 'Not Found', 'text');
    }
    let type: RepoType = 'model';
    let rest = segs;
    if (segs[0] === 'datasets' || segs[0] === 'spaces') {
      type = segs[0] === 'datasets' ? 'dataset' : 'space';
      rest = segs.slice(1);
    }
    const pick = this.pickRepo(type, rest, FILE_MARKERS, false);
    if (!pick || !pick.marker) throw new HubError(404, undefined, 'Not Found', 'text');
    const { rev, rest: pathSegs } = splitRevision(pick.rest);
    await this.resolveFile(ctx, type, pick.repoId, pick.marker === 'raw' ? 'raw' : 'resolve', rev, pathSegs, false);
  }

  /**
   * Splits `segs` into repo id + marker + rest, trying `org/name` and `name` and preferring the
   * reading whose repo exists.
   */
  private pickRepo(
    type: RepoType,
    segs: string[],
    markers: Set<string>,
    allowBare: boolean,
  ): { repoId: string; marker: string | undefined; rest: string[] } | undefined {
    const cands: Array<{ repoId: string; marker: string | undefined; rest: string[] }> = [];
    for (const n of [2, 1]) {
      const marker = segs[n];
      if (segs.length > n && marker !== undefined && markers.has(marker)) {
        cands.push({ repoId: segs.slice(0, n).map(decodeSegment).join('/'), marker, rest: segs.slice(n + 1) });
      }
    }
    if (allowBare && (segs.length === 1 || segs.length === 2) && segs.every((s) => s !== '')) {
      cands.push({ repoId: segs.map(decodeSegment).join('/'), marker: undefined, rest: [] });
    }
    return cands.find((c) => this.repos.has(repoKey(type, c.repoId))) ?? cands[0];
  }

  /** Repo lookup + private check: anonymous → 401 "Invalid username or password.", token → 404 RepoNotFound. */
  private accessRepo(ctx: Ctx, type: RepoType, id: string): Repo {
    const repo = this.repos.get(repoKey(type, id));
    const allowed = repo && (!repo.private || (ctx.token !== undefined && repo.private.allowedTokens.has(ctx.token)));
    if (repo && allowed) return repo;
    if (ctx.token === undefined) throw new HubError(401, undefined, 'Invalid username or password.', 'json');
    throw new HubError(404, 'RepoNotFound', 'Repository not found', 'json');
  }

  /** Gate check for file content (`path` undefined = not a public path). */
  private checkGate(ctx: Ctx, repo: Repo, path: string | undefined): void {
    if (!repo.gated) return;
    if (path !== undefined && repo.gated.publicPaths.has(path)) return;
    if (ctx.token !== undefined && repo.gated.allowedTokens.has(ctx.token)) return;
    const what = `${repo.type} ${repo.id}`;
    if (ctx.token === undefined || !this.isKnownToken(ctx.token)) {
      throw new HubError(
        401,
        'GatedRepo',
        `Access to ${what} is restricted. You must have access to it and be authenticated to access it. Please log in.`,
        'json',
      );
    }
    throw new HubError(
      403,
      'GatedRepo',
      `Access to ${what} is restricted and you are not in the authorized list. Visit ${this.url}/${URL_PREFIX[repo.type]}${repo.id} to ask for access.`,
      'json',
    );
  }

  private mustRev(repo: Repo, rev: string, body: 'json' | 'text'): Commit {
    const c = this.resolveRev(repo, rev);
    if (!c) throw new HubError(404, 'RevisionNotFound', `Invalid rev id: ${rev}`, body);
    return c;
  }

  // ------------------------------------------------------------------ resolve / raw

  private async resolveFile(
    ctx: Ctx,
    type: RepoType,
    repoId: string,
    kind: 'resolve' | 'raw',
    rev: string,
    pathSegs: string[],
    fromCache: boolean,
  ): Promise<void> {
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') {
      throw new HubError(405, undefined, 'Method not allowed', 'text');
    }
    const repo = this.accessRepo(ctx, type, repoId);
    const path = pathSegs.map(decodeSegment).join('/');
    this.checkGate(ctx, repo, path);
    const commit = this.mustRev(repo, rev, 'text');
    const file = commit.files.get(path);
    if (!path || !file) {
      throw new HubError(404, 'EntryNotFound', 'Entry not found', 'text', { 'X-Repo-Commit': commit.id });
    }
    const common: Record<string, string> = {
      'X-Repo-Commit': commit.id,
      'Content-Disposition': headerSafe(contentDisposition(path)),
    };

    if (kind === 'raw' || !file.lfs || fromCache) {
      const body = kind === 'raw' && file.pointer ? file.pointer : file.content;
      const sha1 = kind === 'raw' && file.pointerSha1 ? file.pointerSha1 : file.gitSha1;
      if (kind === 'resolve' && !fromCache && repo.smallFileRedirect) {
        const original = `/${URL_PREFIX[repo.type]}${repo.id}/resolve/${rev}/${path}`;
        const location =
          `/api/resolve-cache/${PLURAL[repo.type]}/${repo.id}/${commit.id}/${encodePath(path)}` +
          `?${encodeURIComponent(original)}=&etag=${encodeURIComponent(`"${sha1}"`)}`;
        this.sendText(ctx, 307, `Temporary Redirect. Redirecting to ${location}`, {
          ...common,
          Location: headerSafe(location),
          'Accept-Ranges': 'bytes',
        });
        return;
      }
      await this.serveContent(ctx, body, `"${sha1}"`, {
        ...common,
        'Content-Type': isText(body) ? TEXT_TYPE : 'application/octet-stream',
      });
      return;
    }

    // LFS file on /resolve/.
    const xetHeaders: Record<string, string> = {};
    if (repo.xet && file.xetHash) {
      xetHeaders['X-Xet-Hash'] = file.xetHash;
      xetHeaders.Link =
        `<${this.url}/api/${PLURAL[repo.type]}/${repo.id}/xet-read-token/${commit.id}>; rel="xet-auth", ` +
        `<${CAS_URL}/v1/reconstructions/${file.xetHash}>; rel="xet-reconstruction-info"`;
    }
    const linked: Record<string, string> = {
      'X-Linked-Size': String(file.size),
      'X-Linked-Etag': `"${file.sha256}"`,
    };
    const accept = ctx.req.headers.accept ?? '';
    if (repo.xet && file.xetHash && accept.includes(XET_FILEINFO_TYPE)) {
      this.sendBuffer(
        ctx,
        200,
        {
          ...common,
          ...linked,
          ...xetHeaders,
          'Content-Type': XET_FILEINFO_TYPE,
          ETag: `"${file.pointerSha1 ?? file.gitSha1}"`,
        },
        Buffer.from(
          JSON.stringify({
            hash: file.xetHash,
            etag: file.sha256,
            size: file.size,
            refreshUrl: `${this.url}/api/${PLURAL[repo.type]}/${repo.id}/xet-read-token/${commit.id}`,
            reconstructionUrl: `${CAS_URL}/v1/reconstructions/${file.xetHash}`,
          }),
        ),
      );
      return;
    }
    const location = this.signedCdnUrl(file);
    this.sendText(ctx, 302, `Found. Redirecting to ${location}`, {
      ...common,
      ...linked,
      ...xetHeaders,
      Location: location,
      ETag: `"${file.pointerSha1 ?? file.gitSha1}"`,
      'Accept-Ranges': 'bytes',
    });
  }

  private async resolveCache(ctx: Ctx, segs: string[]): Promise<void> {
    const type = pluralToType(segs[0]);
    if (!type) throw new HubError(404, undefined, 'Not Found', 'text');
    const rest = segs.slice(1);
    const cands: Array<{ repoId: string; commit: string; path: string[] }> = [];
    for (const n of [2, 1]) {
      const c = rest[n];
      if (c !== undefined && HEX40.test(c)) {
        cands.push({ repoId: rest.slice(0, n).map(decodeSegment).join('/'), commit: c, path: rest.slice(n + 1) });
      }
    }
    const pick = cands.find((c) => this.repos.has(repoKey(type, c.repoId))) ?? cands[0];
    if (!pick) throw new HubError(404, undefined, 'Not Found', 'text');
    await this.resolveFile(ctx, type, pick.repoId, 'resolve', pick.commit, pick.path, true);
  }

  // ------------------------------------------------------------------ API

  private whoami(ctx: Ctx): void {
    if (ctx.token === undefined) {
      throw new HubError(401, undefined, 'You must be logged in to access this endpoint', 'json');
    }
    if (!this.isKnownToken(ctx.token)) {
      throw new HubError(401, undefined, 'Invalid credentials in Authorization header', 'json');
    }
    const name = `user-${sha1Hex(ctx.token).slice(0, 8)}`;
    this.sendJson(ctx, 200, {
      type: 'user',
      id: sha1Hex(`user:${name}`).slice(0, 24),
      name,
      fullname: `Test User ${name}`,
      email: `${name}@example.com`,
      emailVerified: true,
      isPro: false,
      canPay: false,
      orgs: [],
      auth: {
        type: 'access_token',
        accessToken: { displayName: 'test-token', role: 'read', createdAt: new Date(BASE_DATE_MS).toISOString() },
      },
    });
  }

  private async routeApiRepo(ctx: Ctx, type: RepoType, segs: string[]): Promise<void> {
    const pick = this.pickRepo(type, segs, API_MARKERS, true);
    if (!pick) throw new HubError(404, undefined, 'Not Found', 'json');
    const isPost = ctx.method === 'POST';
    if (pick.marker === 'paths-info') {
      if (!isPost) throw new HubError(405, undefined, 'Method not allowed', 'json');
    } else if (ctx.method !== 'GET' && ctx.method !== 'HEAD') {
      throw new HubError(405, undefined, 'Method not allowed', 'json');
    }
    const repo = this.accessRepo(ctx, type, pick.repoId);
    const revFromRest = (): string => (pick.rest.length ? pick.rest.map(decodeSegment).join('/') : 'main');
    switch (pick.marker) {
      case undefined:
        return this.repoInfo(ctx, repo, this.mustRev(repo, 'main', 'json'));
      case 'revision':
        return this.repoInfo(ctx, repo, this.mustRev(repo, revFromRest(), 'json'));
      case 'tree': {
        const { rev, rest } = splitRevision(pick.rest);
        return this.tree(ctx, repo, this.mustRev(repo, rev || 'main', 'json'), rest.map(decodeSegment).join('/'));
      }
      case 'paths-info':
        return this.pathsInfo(ctx, repo, this.mustRev(repo, revFromRest(), 'json'));
      case 'refs':
        return this.refs(ctx, repo);
      case 'commits':
        return this.commits(ctx, repo, this.mustRev(repo, revFromRest(), 'json'));
      case 'xet-read-token': {
        this.checkGate(ctx, repo, undefined);
        this.mustRev(repo, revFromRest(), 'json');
        this.sendJson(ctx, 200, {
          accessToken: `xet_${randomHex(24)}`,
          exp: Math.floor(Date.now() / 1000) + 3600,
          casUrl: CAS_URL,
        });
        return;
      }
      case 'auth-check':
        this.checkGate(ctx, repo, undefined);
        this.sendJson(ctx, 200, {});
        return;
      default:
        throw new HubError(404, undefined, 'Not Found', 'json');
    }
  }

  private repoInfo(ctx: Ctx, repo: Repo, commit: Commit): void {
    const blobs = truthy(ctx.query.get('blobs'));
    const paths = [...commit.files.keys()].sort(compareStrings);
    const siblings = paths.map((p) => {
      const f = commit.files.get(p);
      if (!blobs || !f) return { rfilename: p };
      const s: Record<string, JsonValue> = { rfilename: p, blobId: f.pointerSha1 ?? f.gitSha1, size: f.size };
      if (f.lfs && f.pointer) s.lfs = { sha256: f.sha256, size: f.size, pointerSize: f.pointer.length };
      return s;
    });
    const author = repo.id.includes('/') ? (repo.id.split('/')[0] ?? repo.id) : repo.id;
    const full: Record<string, JsonValue> = {
      _id: sha1Hex(`repo:${repo.type}/${repo.id}`).slice(0, 24),
      id: repo.id,
      ...(repo.type === 'model' ? { modelId: repo.id } : {}),
      author,
      sha: commit.id,
      lastModified: commit.date.toISOString(),
      createdAt: repo.createdAt.toISOString(),
      private: repo.private !== undefined,
      gated: repo.gated ? 'auto' : false,
      disabled: false,
      downloads: 0,
      likes: 0,
      tags: [],
      ...(repo.type === 'space' ? { sdk: 'static' } : {}),
      siblings,
      usedStorage: paths.reduce((sum, p) => sum + (commit.files.get(p)?.size ?? 0), 0),
    };
    const expand = [...ctx.query.getAll('expand'), ...ctx.query.getAll('expand[]')];
    if (expand.length === 0) {
      this.sendJson(ctx, 200, full);
      return;
    }
    const out: Record<string, JsonValue | undefined> = { _id: full._id, id: full.id };
    for (const key of expand) if (key in full) out[key] = full[key];
    this.sendJson(ctx, 200, out);
  }

  /** All files and directories of a commit, sorted by path. */
  private allEntries(commit: Commit): TreeEntry[] {
    const dirs = new Set<string>();
    const entries: TreeEntry[] = [];
    for (const [path, file] of commit.files) {
      entries.push({ kind: 'file', path, file });
      const parts = path.split('/');
      for (let i = 1; i < parts.length; i++) dirs.add(parts.slice(0, i).join('/'));
    }
    for (const d of dirs) entries.push({ kind: 'directory', path: d });
    return entries.sort((a, b) => compareStrings(a.path, b.path));
  }

  private dirOid(commit: Commit, dir: string): string {
    const prefix = `${dir}/`;
    const parts: string[] = [];
    for (const [p, f] of [...commit.files.entries()].sort(([a], [b]) => compareStrings(a, b))) {
      if (p.startsWith(prefix)) parts.push(`${p.slice(prefix.length)}\0${f.pointerSha1 ?? f.gitSha1}`);
    }
    return sha1Hex(`tree\0${parts.join('\n')}`);
  }

  private entrySignature(commit: Commit, path: string): string | undefined {
    const f = commit.files.get(path);
    if (f) return `f:${f.pointerSha1 ?? f.gitSha1}`;
    const prefix = `${path}/`;
    for (const p of commit.files.keys()) if (p.startsWith(prefix)) return `d:${this.dirOid(commit, path)}`;
    return undefined;
  }

  /** The oldest commit in `commit`'s ancestry since which `path` has not changed. */
  private lastCommit(repo: Repo, commit: Commit, path: string): Commit {
    const sig = this.entrySignature(commit, path);
    let c = commit;
    while (c.parent) {
      const p = repo.commits.get(c.parent);
      if (!p || this.entrySignature(p, path) !== sig) break;
      c = p;
    }
    return c;
  }

  private entryJson(repo: Repo, commit: Commit, e: TreeEntry, expand: boolean): Record<string, JsonValue> {
    let out: Record<string, JsonValue>;
    if (e.kind === 'directory') {
      out = { type: 'directory', oid: this.dirOid(commit, e.path), size: 0, path: e.path };
    } else {
      const f = e.file;
      out = { type: 'file', oid: f.pointerSha1 ?? f.gitSha1, size: f.size };
      if (f.lfs && f.pointer) out.lfs = { oid: f.sha256, size: f.size, pointerSize: f.pointer.length };
      if (f.lfs && repo.xet && f.xetHash) out.xetHash = f.xetHash;
      out.path = e.path;
    }
    if (expand) {
      const lc = this.lastCommit(repo, commit, e.path);
      out.lastCommit = { id: lc.id, title: lc.title, date: lc.date.toISOString() };
      if (e.kind === 'file') {
        out.securityFileStatus = {
          status: 'safe',
          avScan: { virusFound: false, virusNames: null },
          pickleImportScan: { highestSafetyLevel: 'innocuous', imports: [] },
        };
      }
    }
    return out;
  }

  private tree(ctx: Ctx, repo: Repo, commit: Commit, dirPath: string): void {
    const dir = dirPath.replace(/^\/+|\/+$/g, '');
    const recursive = truthy(ctx.query.get('recursive'));
    const expand = truthy(ctx.query.get('expand'));
    const all = this.allEntries(commit);
    if (dir !== '' && !all.some((e) => e.kind === 'directory' && e.path === dir)) {
      throw new HubError(404, 'EntryNotFound', `${dir} does not exist on "${commit.id}"`, 'json', {
        'X-Repo-Commit': commit.id,
      });
    }
    const prefix = dir === '' ? '' : `${dir}/`;
    const selected = all.filter((e) => {
      if (!e.path.startsWith(prefix)) return false;
      return recursive || !e.path.slice(prefix.length).includes('/');
    });
    const cursor = ctx.query.get('cursor');
    let offset = 0;
    if (cursor) {
      try {
        const parsed: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
        if (typeof parsed === 'object' && parsed !== null && 'o' in parsed && typeof parsed.o === 'number') {
          offset = parsed.o;
        } else {
          throw new Error('bad cursor');
        }
      } catch {
        throw new HubError(400, 'BadRequest', 'Invalid cursor', 'json');
      }
    }
    const pageSize = Math.max(1, this.treePageSize);
    const page = selected.slice(offset, offset + pageSize);
    const headers: Record<string, string> = {};
    if (offset + pageSize < selected.length) {
      const q = new URLSearchParams(ctx.query);
      q.set('cursor', Buffer.from(JSON.stringify({ o: offset + pageSize })).toString('base64url'));
      headers.Link = `<${this.url}${ctx.pathname}?${q.toString()}>; rel="next"`;
    }
    this.sendJson(
      ctx,
      200,
      page.map((e) => this.entryJson(repo, commit, e, expand)),
      headers,
    );
  }

  private async pathsInfo(ctx: Ctx, repo: Repo, commit: Commit): Promise<void> {
    const body = await readBody(ctx.req);
    const type = String(ctx.req.headers['content-type'] ?? '');
    let paths: string[] = [];
    let expand = false;
    if (type.includes('application/json')) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(body.toString('utf8'));
      } catch {
        throw new HubError(400, 'BadRequest', 'Invalid JSON body', 'json');
      }
      if (typeof parsed === 'object' && parsed !== null) {
        const p = 'paths' in parsed ? parsed.paths : undefined;
        if (Array.isArray(p)) paths = p.filter((x): x is string => typeof x === 'string');
        else if (typeof p === 'string') paths = [p];
        const e = 'expand' in parsed ? parsed.expand : undefined;
        expand = e === true || e === 'true' || e === 1;
      }
    } else {
      const form = new URLSearchParams(body.toString('utf8'));
      paths = [...form.getAll('paths'), ...form.getAll('paths[]')];
      expand = truthy(form.get('expand'));
    }
    const all = this.allEntries(commit);
    const byPath = new Map(all.map((e) => [e.path, e]));
    const seen = new Set<string>();
    const out: Array<Record<string, JsonValue>> = [];
    for (const raw of paths) {
      const p = raw.replace(/^\/+|\/+$/g, '');
      const e = byPath.get(p);
      if (!e || seen.has(p)) continue;
      seen.add(p);
      out.push(this.entryJson(repo, commit, e, expand));
    }
    this.sendJson(ctx, 200, out);
  }

  private refs(ctx: Ctx, repo: Repo): void {
    const branchNames = [...repo.branches.keys()].sort((a, b) =>
      a === 'main' ? -1 : b === 'main' ? 1 : compareStrings(a, b),
    );
    const out: Record<string, JsonValue> = {
      branches: branchNames.map((name) => ({
        name,
        ref: `refs/heads/${name}`,
        targetCommit: repo.branches.get(name) ?? '',
      })),
      tags: [...repo.tags.entries()]
        .sort(([a], [b]) => compareStrings(a, b))
        .map(([name, c]) => ({ name, ref: `refs/tags/${name}`, targetCommit: c })),
      converts: [],
    };
    if (truthy(ctx.query.get('include_prs'))) {
      out.pullRequests = [...repo.prs.entries()]
        .sort(([a], [b]) => a - b)
        .map(([n, c]) => ({ name: `refs/pr/${n}`, ref: `refs/pr/${n}`, targetCommit: c }));
    }
    this.sendJson(ctx, 200, out);
  }

  private commits(ctx: Ctx, repo: Repo, head: Commit): void {
    const chain: Commit[] = [];
    for (let c: Commit | undefined = head; c; c = c.parent ? repo.commits.get(c.parent) : undefined) chain.push(c);
    const pageSize = Math.max(1, this.commitsPageSize);
    const p = Math.max(0, Math.floor(Number(ctx.query.get('p') ?? '0')) || 0);
    const page = chain.slice(p * pageSize, (p + 1) * pageSize);
    const headers: Record<string, string> = { 'X-Total-Count': String(chain.length) };
    if ((p + 1) * pageSize < chain.length) {
      const q = new URLSearchParams(ctx.query);
      q.set('p', String(p + 1));
      headers.Link = `<${this.url}${ctx.pathname}?${q.toString()}>; rel="next"`;
    }
    this.sendJson(
      ctx,
      200,
      page.map((c) => ({
        id: c.id,
        title: c.title,
        message: c.message,
        authors: [{ user: 'fake-hub', avatar: `${this.url}/avatars/fake-hub.svg` }],
        date: c.date.toISOString(),
      })),
      headers,
    );
  }
}

// ---------------------------------------------------------------------------------------------
// Module-level helpers
// ---------------------------------------------------------------------------------------------

function pluralToType(s: string | undefined): RepoType | undefined {
  if (s === 'models') return 'model';
  if (s === 'datasets') return 'dataset';
  if (s === 'spaces') return 'space';
  return undefined;
}

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Takes the revision off the front of raw path segments: one segment (decoded, so
 * `refs%2Fpr%2F1` works), or three for an unencoded `refs/pr/N` / `refs/convert/x`.
 */
function splitRevision(segs: string[]): { rev: string; rest: string[] } {
  const first = segs[0] === undefined ? '' : decodeSegment(segs[0]);
  const second = segs[1];
  if (first === 'refs' && (second === 'pr' || second === 'convert' || second === 'heads' || second === 'tags') && segs.length >= 3) {
    return { rev: `refs/${second}/${decodeSegment(segs[2] ?? '')}`, rest: segs.slice(3) };
  }
  return { rev: first, rest: segs.slice(1) };
}

function matchesFilter(r: RecordedRequest, f: Partial<RequestFilter>): boolean {
  if (f.method !== undefined && r.method !== f.method.toUpperCase()) return false;
  if (f.server !== undefined && r.server !== f.server) return false;
  if (f.status !== undefined && r.status !== f.status) return false;
  if (f.pathPrefix !== undefined && !r.path.startsWith(f.pathPrefix)) return false;
  if (f.pathIncludes !== undefined && !matchesPath(r.path, f.pathIncludes)) return false;
  return true;
}

function releaseBarrier(state: BarrierState): void {
  state.released = true;
  const waiters = state.waiters.splice(0);
  for (const w of waiters) w();
}

function readBody(req: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let total = 0;
    req.on('data', (chunk: Buffer) => {
      total += chunk.length;
      if (total > MAX_REQUEST_BODY) {
        reject(new HubError(413, undefined, 'Payload too large', 'json'));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function listenOn(server: Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

/**
 * Starts a fake Hub and its fake CDN on 127.0.0.1 (two random ports). Call
 * {@link FakeHub.stop} when done.
 */
export async function startFakeHub(opts: FakeHubOptions = {}): Promise<FakeHub> {
  const hub = new FakeHubImpl(opts);
  await hub.listen();
  return hub;
}
