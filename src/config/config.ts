/**
 * Configuration: one table of options (name, type, default, description). Everything else is
 * derived from it: defaults, validation, the `HUBCACHE_*` environment names, the CLI flags and the
 * documentation. `validateConfig` is pure and reports every problem at once: each value is checked
 * by the same parser the module using it applies (host patterns, repo globs), so nothing that
 * validation could catch fails later at start.
 */
import net from 'node:net';
import { parseRepoGlob } from '../hub/repo-policy.js';
import { parseCacheBudget } from '../storage/disk-space.js';
import { HostPattern } from '../upstream/redirect-policy.js';
import { parsePeerUrl } from '../cluster/peer-protocol.js';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';

export interface Config {
  host: string;
  port: number;
  dataDir: string;
  upstream: string[];
  refsTtlSeconds: number;
  authTtlSeconds: number;
  connectTimeoutSeconds: number;
  metadataTimeoutSeconds: number;
  upstreamHeadersTimeoutSeconds: number;
  upstreamIdleTimeoutSeconds: number;
  upstreamStallSeconds: number;
  fillStartWaitMs: number;
  maxResumes: number;
  upstreamRetries: number;
  upstreamRetryMaxWaitSeconds: number;
  upstreamMinBytesPerSecond: number;
  allowedRedirectHosts: string[];
  allowPrivateRedirects: boolean;
  rangeBypassMaxBytes: number;
  maxConcurrentFills: number;
  maxQueuedFills: number;
  segmentMinBytes: number;
  upstreamConnections: number;
  maxUpstreamConnections: number;
  diskWriters: number;
  minFreeBytes: number;
  storage: 'fs' | 's3';
  s3Endpoint: string;
  s3Bucket: string;
  s3Region: string;
  s3Prefix: string;
  s3ForcePathStyle: boolean;
  s3AccessKeyId: string;
  s3SecretAccessKey: string;
  s3TimeoutSeconds: number;
  s3AbandonedUploadHours: number;
  index: 'sqlite' | 'postgres';
  indexUrl: string;
  maxCacheBytes: string;
  evictionPolicy: 'lru' | 'largest-first';
  evictionGraceSeconds: number;
  maxMetadataBytes: number;
  clientHeadersTimeoutSeconds: number;
  clientKeepAliveTimeoutSeconds: number;
  clientIdleTimeoutSeconds: number;
  offline: boolean;
  publicUrl: string;
  hfToken: string;
  allowWrites: boolean;
  accessKeys: string[];
  allowRepos: string[];
  denyRepos: string[];
  corsOrigins: string[];
  metricsToken: string;
  adminToken: string;
  adminListen: string;
  clusterSecret: string;
  peerUrl: string;
  replicaId: string;
  fillLeaseTtlSeconds: number;
  logLevel: LogLevel;
}

/** Checks one string (a value, or one list entry): returns it normalized, or throws an Error saying what is wrong. */
type Check = (text: string) => string;

type OptionType =
  /** `numbers`: a JSON number is taken as its decimal text (e.g. a size in bytes). */
  | { kind: 'string'; optional?: boolean; check?: Check; numbers?: boolean }
  /** A list of strings: a JSON array in the config file, comma-separated in env and flags. */
  | { kind: 'list'; check?: Check }
  | { kind: 'url'; optional?: boolean }
  | { kind: 'boolean' }
  | { kind: 'integer'; min: number; max: number }
  | { kind: 'number'; min: number; max: number }
  | { kind: 'enum'; values: readonly string[] };

export interface OptionSpec {
  key: keyof Config;
  type: OptionType;
  default: Config[keyof Config];
  description: string;
}

export const OPTIONS: readonly OptionSpec[] = [
  { key: 'host', type: { kind: 'string', check: checkListenHost }, default: '0.0.0.0', description: 'Address to listen on.' },
  { key: 'port', type: { kind: 'integer', min: 0, max: 65535 }, default: 8080, description: 'TCP port to listen on (0 picks a free port).' },
  { key: 'dataDir', type: { kind: 'string', check: checkPath }, default: './data', description: 'Cache directory: blobs, staging files and the SQLite index. Must be on a local filesystem.' },
  { key: 'upstream', type: { kind: 'list', check: checkUpstreamUrl }, default: ['https://huggingface.co'], description: "The Hub to mirror; several, in order of preference, e.g. the Hub first and a regional mirror of it second (each trusted alike: clients' tokens go to whichever is asked). Metadata comes from the first healthy one; a connect error, timeout, 5xx or stall moves the work to the next, and a download in progress continues there at the bytes already held once that upstream names the same blob and size (else the switch is refused). A failing upstream is skipped for a cool-down (30 s, doubling while it keeps failing, at most 5 min), logged when it goes down and comes back." },
  { key: 'refsTtlSeconds', type: { kind: 'number', min: 0, max: 31_536_000 }, default: 60, description: 'How long a branch or tag → commit answer is reused before asking upstream again. Within it every answer names the same commit.' },
  { key: 'authTtlSeconds', type: { kind: 'number', min: 0, max: 86_400 }, default: 60, description: "How long upstream's grant of a file to one token is reused; revocation upstream takes effect within it." },
  { key: 'connectTimeoutSeconds', type: { kind: 'number', min: 0.1, max: 600 }, default: 5, description: 'Upstream TCP/TLS connect timeout.' },
  { key: 'metadataTimeoutSeconds', type: { kind: 'number', min: 0.1, max: 600 }, default: 8, description: "Longest wait for an upstream metadata answer (file HEAD): below the clients' own 10 s, so they get a clear error or the offline answer instead of a timeout." },
  { key: 'upstreamHeadersTimeoutSeconds', type: { kind: 'number', min: 0.1, max: 600 }, default: 30, description: 'Longest wait for upstream response headers.' },
  { key: 'upstreamIdleTimeoutSeconds', type: { kind: 'number', min: 0.1, max: 3600 }, default: 60, description: 'Longest silence inside an upstream body before the connection is dropped and resumed.' },
  { key: 'upstreamStallSeconds', type: { kind: 'number', min: 0, max: 3600 }, default: 3, description: 'A download connection on which nothing arrives for this long while a client waits for its next bytes is replaced: a new ranged request (Range + If-Range) takes over from where it stopped and the silent one is closed, so the client is not left silent until the idle timeout (huggingface_hub gives up after 10 s). Only a connection that had already delivered bytes is replaced, at most maxResumes times in a row for the same bytes, and only below upstreamIdleTimeoutSeconds. 0 disables it.' },
  { key: 'fillStartWaitMs', type: { kind: 'integer', min: 0, max: 9000 }, default: 2000, description: 'On a miss, how long to wait for upstream to start sending before answering the client anyway (clients time out after 10 s).' },
  { key: 'maxResumes', type: { kind: 'integer', min: 0, max: 100 }, default: 5, description: 'How many times a dropped upstream download is resumed (Range + If-Range) before it fails.' },
  { key: 'upstreamRetries', type: { kind: 'integer', min: 0, max: 10 }, default: 3, description: "How many times an upstream 429 or 5xx (500, 502, 503, 504) is retried, once per file or metadata question however many clients wait. Upstream's `Retry-After` (or the Hub's `RateLimit` reset) is honoured, else exponential backoff with jitter (0.25, 0.5, 1 s…). Metadata retries stay inside metadataTimeoutSeconds." },
  { key: 'upstreamRetryMaxWaitSeconds', type: { kind: 'number', min: 0, max: 3600 }, default: 30, description: 'Longest `Retry-After` the mirror waits out; if upstream asks for longer, the 429/503 goes to the client at once, with its Retry-After.' },
  { key: 'upstreamMinBytesPerSecond', type: { kind: 'integer', min: 0, max: 1024 * 1024 * 1024 }, default: 1024, description: 'An upstream body slower than this, averaged over upstreamIdleTimeoutSeconds, counts as stalled (a trickle): the connection is dropped and resumed like any other (maxResumes). 0 disables it.' },
  { key: 'allowedRedirectHosts', type: { kind: 'list', check: checkHostPattern }, default: ['huggingface.co', '*.huggingface.co', 'hf.co', '*.hf.co', '*.xethub.hf.co'], description: "Hosts an upstream redirect may lead to (the LFS/Xet CDNs), besides the upstream's own host: `host`, `*.domain` (any depth below it), optionally `:port`. A redirect anywhere else is refused with a 502 (no SSRF)." },
  { key: 'allowPrivateRedirects', type: { kind: 'boolean' }, default: false, description: 'Allow redirects to loopback, private, link-local, unique-local, multicast or any other non-global address (checked on IP literals and on every address a name resolves to: in the connection\'s own DNS lookup, or just before asking an outbound proxy). Only for an upstream whose CDN is on a private network, or behind a proxy whose CDN names the mirror cannot resolve (and for tests).' },
  { key: 'rangeBypassMaxBytes', type: { kind: 'integer', min: 0, max: 1024 * 1024 * 1024 }, default: 1024 * 1024, description: 'A Range request of at most this many bytes (all its ranges together) on a file that is neither cached nor downloading is fetched upstream as those ranges only, not by downloading the whole file (size probes, safetensors header reads). 0: every request fills the whole file.' },
  { key: 'maxConcurrentFills', type: { kind: 'integer', min: 1, max: 10_000 }, default: 16, description: 'Most files downloaded from upstream at once. Further cache misses wait in a first-come first-served queue (their clients wait as for a slow upstream); requests for a file already downloading, cache hits and small range reads never wait.' },
  { key: 'maxQueuedFills', type: { kind: 'integer', min: 0, max: 1_000_000 }, default: 1000, description: 'Most cache misses waiting for a download slot. Past it a new miss is answered at once with 503, `X-Error-Code: Overloaded` and `Retry-After`.' },
  { key: 'segmentMinBytes', type: { kind: 'integer', min: 1024 * 1024, max: Number.MAX_SAFE_INTEGER }, default: 64 * 1024 * 1024, description: 'A file of at least this size that is neither cached nor downloading is fetched with several ranged upstream GETs at once (upstreamConnections), into one staging file, when upstream names its version with a strong ETag and honours Range; smaller files, and any upstream that does not, are fetched with one GET. Still one download per file, however many clients.' },
  { key: 'upstreamConnections', type: { kind: 'integer', min: 1, max: 64 }, default: 8, description: 'Upstream connections one segmented download uses (segments of 16–64 MiB, each resumed on its own). A client reading a part of a downloading file that no connection is about to fetch gets it fetched next, with up to 4 connections more for such clients if all are busy. 1: every file is one stream.' },
  { key: 'maxUpstreamConnections', type: { kind: 'integer', min: 1, max: 10_000 }, default: 32, description: 'Most upstream download connections of all files together. Each running download always has its first connection (maxConcurrentFills of them at most); the connections segmented downloads add wait for this cap, so 16 downloads × 8 segments never open 128 connections to the Hub.' },
  { key: 'diskWriters', type: { kind: 'integer', min: 1, max: 64 }, default: 4, description: 'Writes to the cache disk in flight at once (each a sequential run of at least 4 MiB, or the end of a file). 1 serializes them (HDDs). Downloads whose writes wait keep at most 32 MiB each in memory, then stop reading from upstream until the disk catches up.' },
  { key: 'minFreeBytes', type: { kind: 'integer', min: 0, max: Number.MAX_SAFE_INTEGER }, default: 1024 * 1024 * 1024, description: 'Free space always left on the cache disk. A download that would not fit (free space minus this, minus what downloads in progress still need) is refused up front with 507 `InsufficientStorage`.' },
  { key: 'storage', type: { kind: 'enum', values: ['fs', 's3'] }, default: 'fs', description: '`fs`: blobs live in dataDir. `s3`: blobs live in an S3-compatible object store (AWS S3, Ceph RGW, OpenStack Swift s3api, MinIO; options `s3*`), shared by every mirror that points at it; dataDir keeps the index, the staging files and a local copy of blobs (served at local disk speed). A blob counts as cached once the object store holds it, verified. Blobs without a local copy are read from the store, also offline; when the store is down they get 503 `StorageUnavailable`, blobs with a local copy are still served.' },
  { key: 's3Endpoint', type: { kind: 'url', optional: true }, default: '', description: 'S3 endpoint (`https://s3.example:443`, `http://127.0.0.1:9000`). Empty: AWS S3 of s3Region.' },
  { key: 's3Bucket', type: { kind: 'string', optional: true, check: checkBucket }, default: '', description: 'S3 bucket of the blobs (must exist). Required with `storage: s3`.' },
  { key: 's3Region', type: { kind: 'string', optional: true, check: checkRegion }, default: '', description: 'S3 region the requests are signed for. Empty: AWS_REGION, else `us-east-1`.' },
  { key: 's3Prefix', type: { kind: 'string', optional: true, check: checkS3Prefix }, default: '', description: 'Prefix of every object name (`team/hubcache/`), so several applications can share a bucket. Objects are `<prefix>blobs-v1/<sha256|gitsha1>/<hex>`.' },
  { key: 's3ForcePathStyle', type: { kind: 'boolean' }, default: false, description: 'Path-style requests (`endpoint/bucket/object`) instead of virtual-hosted ones (`bucket.endpoint/object`): needed by most self-hosted stores (Swift, MinIO, RGW without wildcard DNS).' },
  { key: 's3AccessKeyId', type: { kind: 'string', optional: true, check: checkToken }, default: '', description: 'S3 access key id. Empty (with s3SecretAccessKey empty): the usual AWS variables and files (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, instance roles). Never logged.' },
  { key: 's3SecretAccessKey', type: { kind: 'string', optional: true, check: checkToken }, default: '', description: 'S3 secret access key, given together with s3AccessKeyId. Never logged.' },
  { key: 's3TimeoutSeconds', type: { kind: 'number', min: 0.1, max: 600 }, default: 10, description: 'Longest wait for the object store to connect or to send or take the next bytes of a request (and for a lookup or listing as a whole): a store that is down or hangs gives 503 `StorageUnavailable`, never a hung client.' },
  { key: 's3AbandonedUploadHours', type: { kind: 'integer', min: 1, max: 8760 }, default: 24, description: "At startup, multipart uploads under `<s3Prefix>blobs-v1/` started more than this many hours ago (by the store's clock) are aborted: what a mirror killed during an upload left in the bucket (invisible, but its parts take space). Younger uploads (another mirror sharing the bucket may be uploading) and other prefixes are left alone. Keep it above the longest download: a blob's parts are uploaded while it downloads." },
  { key: 'index', type: { kind: 'enum', values: ['sqlite', 'postgres'] }, default: 'sqlite', description: "Where the index (refs, files, blobs, API answers, jobs, counters) lives. `sqlite`: a file in dataDir, for one mirror process. `postgres`: a PostgreSQL database (indexUrl) shared by several replicas, which then know each other's blobs; needs `storage: s3` (a blob one replica records must be readable by every other). Writes the database cannot take for a while (restarting, unreachable) wait in memory and land once it is back; reads then fail over to upstream." },
  { key: 'indexUrl', type: { kind: 'string', optional: true, check: checkIndexUrl }, default: '', description: 'With `index: postgres`: the database, `postgres://user:password@host:port/database` (or `postgresql://`; libpq parameters such as `?sslmode=require` in the query). The tables are created and migrated at start (once, whatever the number of replicas starting). The password is never logged or shown.' },
  { key: 'maxCacheBytes', type: { kind: 'string', optional: true, numbers: true, check: checkCacheBudget }, default: '', description: 'Most bytes of files the cache holds: a number of bytes, or a percentage of the cache filesystem\'s size (`90%`). Past it, files not in use are evicted (evictionPolicy), in the background from 95 % of it down to 90 %, and before a download that would not fit is admitted; 507 `InsufficientStorage` only when nothing is left to evict. Empty: the filesystem\'s size minus minFreeBytes.' },
  { key: 'evictionPolicy', type: { kind: 'enum', values: ['lru', 'largest-first'] }, default: 'lru', description: 'Which files are evicted first when the cache is over maxCacheBytes or the disk is short of minFreeBytes: `lru` the least recently used, `largest-first` the largest. Files being read or downloaded, and those used in the last evictionGraceSeconds, are never evicted.' },
  { key: 'evictionGraceSeconds', type: { kind: 'number', min: 0, max: 31_536_000 }, default: 60, description: 'A file used (read, downloaded or stored) within this many seconds is not evicted, so a client that asks for the next file of a model does not lose the previous one. Files being read or downloaded are never evicted, whatever this says.' },
  { key: 'maxMetadataBytes', type: { kind: 'integer', min: 0, max: Number.MAX_SAFE_INTEGER }, default: 256 * 1024 * 1024, description: 'Most bytes of recorded Hub API answers and branch → commit refs kept in the index; past it the oldest are pruned (they are asked upstream again when needed; offline they are gone). 0: unbounded.' },
  { key: 'clientHeadersTimeoutSeconds', type: { kind: 'number', min: 1, max: 600 }, default: 30, description: 'Longest time a client may take to send its request headers before the connection is closed (slowloris guard). Response bodies have no time limit.' },
  { key: 'clientKeepAliveTimeoutSeconds', type: { kind: 'number', min: 0.1, max: 3600 }, default: 65, description: 'How long an idle keep-alive client connection stays open between requests (above the 60 s idle timeout of common load balancers).' },
  { key: 'clientIdleTimeoutSeconds', type: { kind: 'number', min: 0, max: 86_400 }, default: 120, description: 'A client connection on which nothing moves for this long (a client that stopped reading) is closed. Above the upstream idle timeout, so a stalled upstream is resumed first. 0: never.' },
  { key: 'offline', type: { kind: 'boolean' }, default: false, description: 'Never contact upstream: answer only from the cache (files, metadata, last known branch → commit), everything else fails at once with 503. Logged at startup.' },
  { key: 'publicUrl', type: { kind: 'url', optional: true }, default: '', description: "The mirror's own base URL as clients reach it (e.g. `https://hf-mirror.internal`), used in pagination `Link` headers. Empty: `http://` + the request's Host header when it is a plain host[:port], else the listen address." },
  { key: 'hfToken', type: { kind: 'string', optional: true, check: checkToken }, default: '', description: 'Service token sent upstream for clients that send none (e.g. transformers.js, which never sends one to a mirror). Risk: everyone who can reach the mirror can read what this token can read; combine with accessKeys. Never logged.' },
  { key: 'allowWrites', type: { kind: 'boolean' }, default: false, description: 'Pass write requests under `/api/` (POST, PUT, PATCH, DELETE: uploads, commits, repo settings) upstream with the caller\'s token, or with hfToken for clients that send none. Risk: with hfToken, everyone who can reach the mirror then writes as the service token. Off: refused with 403 `ReadOnlyMirror` before anything goes upstream (the read-only paths-info POST always works).' },
  { key: 'accessKeys', type: { kind: 'list', check: checkToken }, default: [], description: 'If set, every client must send `Authorization: Bearer <key>` with one of these keys (clients set HF_TOKEN to it); the key is not forwarded, upstream is asked with hfToken or anonymously. Empty: the mirror is open and forwards client tokens.' },
  { key: 'allowRepos', type: { kind: 'list', check: checkRepoGlob }, default: [], description: 'If set, only repos matching one of these globs are served, matched against `models/<id>`, `datasets/<id>`, `spaces/<id>` (`*` within a segment, `**` across). E.g. `models/meta-llama/*,datasets/**`.' },
  { key: 'denyRepos', type: { kind: 'list', check: checkRepoGlob }, default: [], description: 'Repos matching one of these globs (same syntax as allowRepos) are refused with 403, even if allowed.' },
  { key: 'corsOrigins', type: { kind: 'list', check: checkCorsOrigin }, default: ['*'], description: 'Web origins (`https://app.example[:port]`) whose pages may read the mirror from a browser (transformers.js, @huggingface/hub in a web page). `*`: any page, like the Hub (`Access-Control-Allow-Origin: *`); a list: only those (the matching origin is echoed, with `Vary: Origin`); empty: none. With `*` any web page a user of the mirror opens may read what the mirror serves anonymously; restrict it on an internal network.' },
  { key: 'metricsToken', type: { kind: 'string', optional: true, check: checkToken }, default: '', description: 'Bearer token for `GET /metrics` (Prometheus) and the dashboard\'s data (`/_/status`): with it, those answer only `Authorization: Bearer <metricsToken>` (access keys are not asked for), and the dashboard names repos and files. Empty: they are served like every other request (accessKeys if set, else to anyone) and carry no repo or file names. Never logged.' },
  { key: 'adminToken', type: { kind: 'string', optional: true, check: checkAdminToken }, default: '', description: 'Enables the operator API under `/admin/` on the main port (prefetch, import, ls, stats, verify, jobs): requests must send `Authorization: Bearer <adminToken>`. At least 16 visible ASCII characters, not a Hugging Face token (`hf_…`) and not equal to hfToken or an access key: no Hub token or access key ever opens `/admin/`. With adminListen, required there too. Never logged. Empty (and no adminListen): `/admin/` answers 404 like any unknown path.' },
  { key: 'adminListen', type: { kind: 'string', optional: true, check: checkAdminListen }, default: '', description: 'A second listener, `host:port` (`[v6]:port`; port 0 picks one), that serves only `/admin/`; the main port then has no admin API. Without adminToken it is open to whoever reaches that address: bind it to loopback or a management network.' },
  { key: 'clusterSecret', type: { kind: 'string', optional: true, check: checkClusterSecret }, default: '', description: 'Shared by the replicas of a cluster: enables the internal endpoint `/internal/v1/blobs/<key>` through which another replica streams a blob this one holds or is downloading (requests must send `Authorization: Bearer <clusterSecret>`), and is sent when this one reads from another. At least 16 visible ASCII characters, not a Hugging Face token and not equal to hfToken, an access key, adminToken or metricsToken. It opens every cached blob, gated ones too (each replica checks its own client\'s access upstream before asking another): keep it to the replicas. Never logged. Empty: no such endpoint (404).' },
  { key: 'peerUrl', type: { kind: 'url', optional: true }, default: '', description: "With `index: postgres` (replicas): this replica's base URL as the other replicas reach it (`http://10.0.0.5:8080`), stored with the fill leases it holds so that a replica whose client asks for a blob this one is downloading streams it from here (`/internal/v1/blobs/`, with clusterSecret) instead of downloading it again. With clusterSecret, it turns the fill leases on (one download per file across the replicas); empty: each replica downloads on its own. No credentials, query or fragment." },
  { key: 'replicaId', type: { kind: 'string', optional: true, check: checkReplicaId }, default: '', description: 'With `index: postgres`: this replica\'s name in the cluster (shown as the owner of the downloads it holds; letters, digits, `.`, `_`, `-`, at most 64). Unique per replica; a replica restarted with the same id takes its own leftover leases over at once. Empty: the host name.' },
  { key: 'fillLeaseTtlSeconds', type: { kind: 'number', min: 1, max: 600 }, default: 15, description: 'With `index: postgres`: how long a replica\'s claim on a download (its fill lease, renewed every third of it while the download runs) outlives the replica. A replica that dies is replaced at once by the replicas streaming from it (they see its endpoint fail), else after at most this.' },
  { key: 'logLevel', type: { kind: 'enum', values: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] }, default: 'info', description: 'Log level.' },
];

export const DEFAULT_CONFIG: Config = Object.fromEntries(OPTIONS.map((o) => [o.key, o.default])) as unknown as Config;

/** `refsTtlSeconds` → `HUBCACHE_REFS_TTL_SECONDS`. */
export function envName(key: string): string {
  return `HUBCACHE_${key.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase()}`;
}

/** `refsTtlSeconds` → `--refs-ttl-seconds`. */
export function flagName(key: string): string {
  return `--${key.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase()}`;
}

/** A value with where it came from, for error messages. */
export interface SourcedValue {
  value: unknown;
  source: string;
}

function coerce(spec: OptionSpec, { value, source }: SourcedValue, errors: string[]): unknown {
  const where = `${spec.key} (from ${source})`;
  const t = spec.type;
  switch (t.kind) {
    case 'string': {
      if (t.numbers && typeof value === 'number') value = String(value);
      if (typeof value !== 'string' || (value.length === 0 && !t.optional)) {
        errors.push(`${where}: expected a non-empty string`);
        return value;
      }
      return value === '' || !t.check ? value : checked(t.check, value, where, errors);
    }
    case 'list': {
      const list = typeof value === 'string' ? value.split(',').map((v) => v.trim()).filter(Boolean) : value;
      if (!Array.isArray(list) || !list.every((v) => typeof v === 'string' && v.length > 0)) {
        errors.push(`${where}: expected a list of strings (a JSON array, or comma-separated)`);
        return value;
      }
      const check = t.check;
      return check ? (list as string[]).map((entry) => checked(check, entry, where, errors)) : list;
    }
    case 'boolean': {
      if (typeof value === 'boolean') return value;
      if (value === 'true' || value === '1') return true;
      if (value === 'false' || value === '0') return false;
      errors.push(`${where}: expected true, false, 1 or 0, got ${JSON.stringify(value)}`);
      return value;
    }
    case 'url': {
      if (t.optional && value === '') return value;
      if (typeof value !== 'string') {
        errors.push(`${where}: expected a URL string`);
        return value;
      }
      try {
        const u = new URL(value);
        if (u.protocol !== 'http:' && u.protocol !== 'https:') errors.push(`${where}: must be an http:// or https:// URL, got ${JSON.stringify(value)}`);
        else if (u.search || u.hash || u.username || u.password) errors.push(`${where}: must not carry a query, fragment or credentials`);
        return value.replace(/\/+$/, '');
      } catch {
        errors.push(`${where}: not a valid URL: ${JSON.stringify(value)}`);
        return value;
      }
    }
    case 'integer':
    case 'number': {
      const n = typeof value === 'number' ? value : typeof value === 'string' && value.trim() !== '' ? Number(value) : NaN;
      if (!Number.isFinite(n) || (t.kind === 'integer' && !Number.isInteger(n))) {
        errors.push(`${where}: expected ${t.kind === 'integer' ? 'an integer' : 'a number'}, got ${JSON.stringify(value)}`);
      } else if (n < t.min || n > t.max) {
        errors.push(`${where}: must be between ${t.min} and ${t.max}, got ${n}`);
      }
      return n;
    }
    case 'enum': {
      if (typeof value !== 'string' || !t.values.includes(value)) errors.push(`${where}: must be one of ${t.values.join(', ')}, got ${JSON.stringify(value)}`);
      return value;
    }
  }
}

/**
 * Merges layers (later wins) over the defaults and validates. Unknown keys in a layer are errors.
 * Returns every problem found, or the config.
 */
export function validateConfig(layers: ReadonlyArray<{ source: string; values: Record<string, unknown> }>): { ok: true; config: Config } | { ok: false; errors: string[] } {
  const errors: string[] = [];
  const known = new Set(OPTIONS.map((o) => o.key as string));
  const chosen = new Map<string, SourcedValue>();
  for (const layer of layers) {
    for (const [key, value] of Object.entries(layer.values)) {
      if (value === undefined) continue;
      if (!known.has(key)) {
        errors.push(`unknown option ${JSON.stringify(key)} (from ${layer.source})`);
        continue;
      }
      chosen.set(key, { value, source: layer.source });
    }
  }
  const config: Record<string, unknown> = { ...DEFAULT_CONFIG };
  const invalid = new Set<string>();
  for (const spec of OPTIONS) {
    const v = chosen.get(spec.key);
    if (!v) continue;
    const before = errors.length;
    config[spec.key] = coerce(spec, v, errors);
    if (errors.length > before) invalid.add(spec.key);
  }
  // Combinations are judged between values that are valid on their own.
  errors.push(...combinationProblems(config as unknown as Config, (key) => chosen.get(key)?.source ?? 'default', (...keys) => keys.every((k) => !invalid.has(k))));
  return errors.length > 0 ? { ok: false, errors } : { ok: true, config: config as unknown as Config };
}

/** Runs a Check; its Error becomes one problem line. */
function checked(check: Check, text: string, where: string, errors: string[]): string {
  try {
    return check(text);
  } catch (err) {
    errors.push(`${where}: ${(err as Error).message}`);
    return text;
  }
}

/** Problems between options, each valid alone. */
function combinationProblems(c: Config, sourceOf: (key: keyof Config) => string, valid: (...keys: Array<keyof Config>) => boolean): string[] {
  const problems: string[] = [];
  const at = (key: keyof Config) => `${key} (from ${sourceOf(key)})`;
  if (valid('upstream')) {
    if (c.upstream.length === 0) problems.push(`${at('upstream')}: at least one upstream URL is needed`);
    const seen = new Set<string>();
    for (const u of c.upstream) {
      if (seen.has(u)) problems.push(`${at('upstream')}: ${JSON.stringify(u)} is listed twice`);
      seen.add(u);
    }
  }
  if (valid('corsOrigins') && c.corsOrigins.includes('*') && c.corsOrigins.length > 1) {
    problems.push(`${at('corsOrigins')}: "*" allows every origin and cannot be combined with a list of origins`);
  }
  // No Hub credential may open the operator API: a token that is also the service token or an
  // access key would be sent by clients (or upstream) and would then pass the admin check.
  if (valid('adminToken', 'hfToken') && c.adminToken !== '' && c.adminToken === c.hfToken) {
    problems.push(`${at('adminToken')}: must differ from hfToken (the operator API never opens with a Hub token)`);
  }
  if (valid('adminToken', 'accessKeys') && c.adminToken !== '' && c.accessKeys.includes(c.adminToken)) {
    problems.push(`${at('adminToken')}: must differ from every access key (clients send those)`);
  }
  // The cluster secret opens every blob: no credential a client or upstream sees may equal it.
  if (valid('clusterSecret', 'hfToken', 'accessKeys', 'adminToken', 'metricsToken') && c.clusterSecret !== '') {
    const others: Array<[keyof Config, boolean]> = [
      ['hfToken', c.clusterSecret === c.hfToken],
      ['accessKeys', c.accessKeys.includes(c.clusterSecret)],
      ['adminToken', c.clusterSecret === c.adminToken],
      ['metricsToken', c.clusterSecret === c.metricsToken],
    ];
    for (const [key, same] of others) if (same) problems.push(`${at('clusterSecret')}: must differ from ${key} (the value is not shown)`);
  }
  // A stalled upstream body leaves the client connection silent too: the client side must wait
  // longer than the upstream side, or clients are cut off instead of the download being resumed.
  if (valid('clientIdleTimeoutSeconds', 'upstreamIdleTimeoutSeconds') && c.clientIdleTimeoutSeconds > 0 && c.clientIdleTimeoutSeconds <= c.upstreamIdleTimeoutSeconds) {
    problems.push(
      `${at('clientIdleTimeoutSeconds')}: must be above upstreamIdleTimeoutSeconds (${c.upstreamIdleTimeoutSeconds}, from ${sourceOf('upstreamIdleTimeoutSeconds')}), or 0, got ${c.clientIdleTimeoutSeconds}`,
    );
  }
  // A shared index over per-box disks would name blobs no other replica has.
  if (c.index === 'postgres' && valid('indexUrl') && c.indexUrl === '') problems.push(`${at('index')}: "postgres" needs indexUrl`);
  if (c.index === 'sqlite' && valid('indexUrl') && c.indexUrl !== '') problems.push(`${at('indexUrl')}: only used with index "postgres" (index is "sqlite", from ${sourceOf('index')})`);
  if (c.index === 'postgres' && valid('storage') && c.storage !== 's3') {
    problems.push(`${at('index')}: "postgres" (an index shared by replicas) needs storage "s3" (blobs every replica reads), got storage "${c.storage}" (from ${sourceOf('storage')})`);
  }
  if (c.storage === 's3' && valid('s3Bucket') && c.s3Bucket === '') problems.push(`${at('storage')}: "s3" needs s3Bucket`);
  // Replicas: each streams the others' downloads through the internal endpoint, found by peerUrl.
  // With neither, each replica downloads on its own (a warning at start); one alone is a mistake.
  if (valid('index', 'peerUrl', 'clusterSecret') && c.index === 'postgres' && c.peerUrl !== '' && c.clusterSecret === '') {
    problems.push(`${at('peerUrl')}: needs clusterSecret, which the replicas use to stream each other's downloads`);
  }
  if (valid('peerUrl')) {
    if (c.peerUrl !== '' && c.index !== 'postgres') problems.push(`${at('peerUrl')}: only used with index "postgres" (replicas)`);
    if (c.peerUrl !== '') {
      try {
        parsePeerUrl(c.peerUrl);
      } catch (err) {
        problems.push(`${at('peerUrl')}: ${(err as Error).message}`);
      }
    }
  }
  if (valid('s3AccessKeyId', 's3SecretAccessKey') && (c.s3AccessKeyId === '') !== (c.s3SecretAccessKey === '')) {
    problems.push(`${c.s3AccessKeyId === '' ? at('s3SecretAccessKey') : at('s3AccessKeyId')}: s3AccessKeyId and s3SecretAccessKey go together (or leave both empty for the AWS variables)`);
  }
  return problems;
}

// Checks of single values
// ---------------------------------------------------------------------------------------------

// A DNS name (labels of letters, digits and hyphens), optionally with a trailing dot.
const HOSTNAME_RE = /^(?=.{1,253}\.?$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*\.?$/i;

/** An upstream base URL: http(s), no query, fragment or credentials; normalized without a trailing slash. */
function checkUpstreamUrl(text: string): string {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new Error(`not a valid URL: ${JSON.stringify(text)}`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`must be an http:// or https:// URL, got ${JSON.stringify(text)}`);
  if (u.search || u.hash || u.username || u.password) throw new Error('must not carry a query, fragment or credentials');
  return text.replace(/\/+$/, '');
}

/**
 * `indexUrl`: a postgres:// or postgresql:// URL naming a host (and a database). Its password is
 * never part of a message: errors show the URL with the password replaced, or nothing of it.
 */
function checkIndexUrl(text: string): string {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new Error('not a valid URL (the value is not shown: it may hold a password)');
  }
  if (u.password !== '') u.password = '***';
  const shown = JSON.stringify(u.toString());
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') throw new Error(`must be a postgres:// or postgresql:// URL, got ${shown}`);
  if (u.hostname === '') throw new Error(`must name the database host: ${shown}`);
  if (u.hash) throw new Error(`must not carry a fragment: ${shown}`);
  return text;
}

/** `host`: an IPv4 or IPv6 address (no brackets) or a host name, as `server.listen` takes it. */
function checkListenHost(text: string): string {
  if (net.isIP(text) !== 0 || HOSTNAME_RE.test(text)) return text;
  if (/^\[.*\]$/.test(text) && net.isIP(text.slice(1, -1)) === 6) throw new Error(`write an IPv6 address without brackets: ${JSON.stringify(text.slice(1, -1))}`);
  throw new Error(`not an IP address or host name: ${JSON.stringify(text)}`);
}

/** A filesystem path: no NUL byte (the filesystem would refuse it at start). */
function checkPath(text: string): string {
  if (text.includes('\0')) throw new Error('a path cannot contain a NUL character');
  return text;
}

/** A bearer token or access key: visible ASCII without spaces, as an HTTP header carries it. */
function checkToken(text: string): string {
  // Never echo the value: it is a secret.
  if (!/^[\x21-\x7e]+$/.test(text)) throw new Error('must be visible ASCII characters without spaces (the value is not shown)');
  return text;
}

/** An S3 bucket name: 3–63 of lower-case letters, digits, dots and hyphens, starting and ending with a letter or digit. */
function checkBucket(text: string): string {
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(text)) throw new Error(`not an S3 bucket name (3-63 lower-case letters, digits, "." and "-"): ${JSON.stringify(text)}`);
  return text;
}

function checkRegion(text: string): string {
  if (!/^[a-z0-9-]{1,64}$/.test(text)) throw new Error(`not a region name (lower-case letters, digits and "-"): ${JSON.stringify(text)}`);
  return text;
}

/** An object-name prefix: no leading "/", no empty, "." or ".." segment; stored ending with "/". */
function checkS3Prefix(text: string): string {
  const segments = text.replace(/\/$/, '').split('/');
  if (text.startsWith('/') || segments.some((p) => p === '' || p === '.' || p === '..') || !/^[\x20-\x7e\u0080-\uffff]*$/.test(text) || text.includes('\\')) {
    throw new Error(`must be segments separated by "/" (no leading "/", no empty, "." or ".." segment, no control characters or backslash): ${JSON.stringify(text)}`);
  }
  return text.endsWith('/') ? text : `${text}/`;
}

/** The operator API's bearer token: a secret of its own, never a Hub token (its value is never shown). */
function checkAdminToken(text: string): string {
  checkToken(text);
  if (text.length < 16) throw new Error('must be at least 16 characters long (the value is not shown)');
  if (/^hf_/i.test(text)) throw new Error('looks like a Hugging Face token (hf_…): choose a separate secret for the operator API (the value is not shown)');
  return text;
}

/** The replicas' shared secret: a secret of its own, never a Hub token (its value is never shown). */
function checkClusterSecret(text: string): string {
  checkToken(text);
  if (text.length < 16) throw new Error('must be at least 16 characters long (the value is not shown)');
  if (/^hf_/i.test(text)) throw new Error('looks like a Hugging Face token (hf_…): choose a separate secret for the cluster (the value is not shown)');
  return text;
}

function checkReplicaId(text: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(text)) throw new Error('must be 1 to 64 letters, digits, ".", "_" or "-", starting with a letter or digit');
  return text;
}

/** `host:port`, `[v6]:port`: the admin listener's address (see parseListenAddress). */
function checkAdminListen(text: string): string {
  parseListenAddress(text);
  return text;
}

/**
 * `host:port` or `[ipv6]:port` → its parts, as `server.listen` takes them. Throws an Error saying
 * what is wrong.
 */
export function parseListenAddress(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || host === undefined || !Number.isInteger(port) || port > 65535) throw new Error(`expected host:port (or [ipv6]:port), got ${JSON.stringify(text)}`);
  if (m[1] !== undefined && net.isIP(host) !== 6) throw new Error(`not an IPv6 address in brackets: ${JSON.stringify(text)}`);
  if (m[2] !== undefined) checkListenHost(host);
  return { host, port };
}

/** `maxCacheBytes`: a whole number of bytes, or a percentage (0 < p ≤ 100) of the filesystem. */
function checkCacheBudget(text: string): string {
  parseCacheBudget(text);
  return text;
}

function checkHostPattern(text: string): string {
  new HostPattern(text);
  return text;
}

function checkRepoGlob(text: string): string {
  parseRepoGlob(text);
  return text;
}

/** `*`, or a web origin `http(s)://host[:port]` (normalized as browsers send it: lower case, no default port). */
function checkCorsOrigin(text: string): string {
  if (text === '*') return text;
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new Error(`not an origin (scheme://host[:port]): ${JSON.stringify(text)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`must be an http:// or https:// origin, got ${JSON.stringify(text)}`);
  if (url.pathname !== '/' || url.search || url.hash || url.username || url.password || /[?#]$/.test(text)) {
    throw new Error(`an origin is scheme://host[:port] only, without path, query or credentials: ${JSON.stringify(text)}`);
  }
  return url.origin;
}
