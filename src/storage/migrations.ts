/**
 * Ordered schema steps for the cache index, applied inside one transaction each and recorded in
 * `PRAGMA user_version`. Never edit a shipped step: append a new one.
 */
export const MIGRATIONS: readonly string[] = [
  // 1: refs, files, blobs.
  `
  CREATE TABLE refs (
    repo_type   TEXT NOT NULL,
    repo_id     TEXT NOT NULL,
    revision    TEXT NOT NULL,
    commit_sha  TEXT NOT NULL,
    checked_at  INTEGER NOT NULL,            -- ms since epoch of the upstream answer
    PRIMARY KEY (repo_type, repo_id, revision)
  ) WITHOUT ROWID;

  CREATE TABLE files (
    repo_type    TEXT NOT NULL,
    repo_id      TEXT NOT NULL,
    commit_sha   TEXT NOT NULL,
    view         TEXT NOT NULL,              -- 'resolve' | 'raw'
    path         TEXT NOT NULL,
    blob_key     TEXT NOT NULL,
    size         INTEGER NOT NULL,
    etag         TEXT NOT NULL,              -- unquoted: git sha1 or sha256
    is_lfs       INTEGER NOT NULL,
    content_type TEXT NOT NULL,
    anonymous_ok INTEGER NOT NULL,           -- 1 when upstream answered this file to an anonymous request
    checked_at   INTEGER NOT NULL,
    PRIMARY KEY (repo_type, repo_id, commit_sha, view, path)
  ) WITHOUT ROWID;
  CREATE INDEX files_by_blob ON files (blob_key);

  CREATE TABLE blobs (
    blob_key         TEXT PRIMARY KEY,
    size             INTEGER NOT NULL,
    stored_at        INTEGER NOT NULL,
    last_accessed_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  `,
  // 2: API answers (repo info, tree pages, paths-info) of immutable commits, anonymous only.
  `
  CREATE TABLE api_responses (
    repo_type    TEXT NOT NULL,
    repo_id      TEXT NOT NULL,
    commit_sha   TEXT NOT NULL,
    request_key  TEXT NOT NULL,              -- endpoint + canonical query (+ body digest for paths-info)
    status       INTEGER NOT NULL,
    headers      TEXT NOT NULL,              -- JSON object of the few headers kept (content type, error code/message)
    next_page    TEXT,                       -- rel="next" as an upstream path + query (no origin: built per request)
    body         BLOB NOT NULL,
    stored_at    INTEGER NOT NULL
  );
  CREATE UNIQUE INDEX api_responses_by_key ON api_responses (repo_type, repo_id, commit_sha, request_key);
  `,
  // 3: who may read a recording back without asking upstream (see hub/access-policy.ts):
  // 'anonymous' (public content), 'service:<fingerprint>' (what one service token was given), or
  // NULL (a file row learnt with a client's token). Everything recorded so far was anonymous,
  // except file rows with anonymous_ok = 0.
  `
  ALTER TABLE files ADD COLUMN scope TEXT;
  UPDATE files SET scope = 'anonymous' WHERE anonymous_ok = 1;
  ALTER TABLE files DROP COLUMN anonymous_ok;
  ALTER TABLE refs ADD COLUMN scope TEXT NOT NULL DEFAULT 'anonymous';
  ALTER TABLE api_responses ADD COLUMN scope TEXT NOT NULL DEFAULT 'anonymous';
  `,
  // 4: operator tools. Hits per blob (served from disk), traffic counters kept across restarts,
  // and background jobs (prefetch, import, verify) with one row per finished item, so that an
  // interrupted job resumes where it stopped. A job row never holds a token.
  `
  ALTER TABLE blobs ADD COLUMN hits INTEGER NOT NULL DEFAULT 0;

  CREATE TABLE counters (
    name   TEXT PRIMARY KEY,
    value  INTEGER NOT NULL
  ) WITHOUT ROWID;

  CREATE TABLE jobs (
    id          TEXT PRIMARY KEY,
    kind        TEXT NOT NULL,               -- 'prefetch' | 'import' | 'verify'
    state       TEXT NOT NULL,               -- 'queued' | 'running' | 'done' | 'failed' | 'cancelled'
    params      TEXT NOT NULL,               -- JSON: what was asked (never a token)
    progress    TEXT NOT NULL,               -- JSON: counters
    message     TEXT,                        -- why it failed, or what it waits for
    created_at  INTEGER NOT NULL,
    started_at  INTEGER,
    finished_at INTEGER
  ) WITHOUT ROWID;
  CREATE INDEX jobs_by_created ON jobs (created_at);

  CREATE TABLE job_items (
    job_id   TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq      INTEGER NOT NULL,               -- 1, 2, ... per job, in the order items finished
    item     TEXT NOT NULL,                  -- a file path, a blob key
    outcome  TEXT NOT NULL,                  -- e.g. 'cached', 'filled', 'linked', 'corrupt', 'failed'
    ok       INTEGER NOT NULL,               -- 1 when the outcome is a success
    bytes    INTEGER NOT NULL,
    message  TEXT,
    PRIMARY KEY (job_id, seq)
  ) WITHOUT ROWID;
  `,
  // 5: eviction walks blobs least recently used first, or largest first.
  `
  CREATE INDEX blobs_by_access ON blobs (last_accessed_at, blob_key);
  CREATE INDEX blobs_by_size ON blobs (size, blob_key);
  CREATE INDEX refs_by_checked ON refs (checked_at);
  CREATE INDEX api_responses_by_stored ON api_responses (stored_at);
  `,
];
