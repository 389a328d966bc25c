/**
 * AccessPolicy: the one home for "who may read what from the cache, and how fresh".
 *
 * Identities: who the mirror asks upstream as, for one request.
 * - `anonymous`: no credentials (no hfToken configured and the client sent none).
 * - `service`: the mirror's own identity, `hfToken`, used for every client that sends no token
 *   (every client, with accessKeys). All those clients share it, so what upstream gave it may be
 *   given back to any of them.
 * - `client`: a client's own token, forwarded upstream and known here only by a keyed hash.
 *
 * Scopes: under which an upstream answer is recorded in the index (file rows, branch pins, API
 * answers), deciding who may read it back without asking upstream about it again.
 * - `anonymous`: public content. Upstream gave it to an anonymous request, or to the service
 *   token while the repo was public (`private: false`, not gated: then every file of it is
 *   anonymously readable).
 * - `service:<fingerprint>`: upstream gave it to the service token with that fingerprint (a
 *   one-way hash, never the token). Readable by that service identity only: not by anonymous
 *   callers once hfToken is removed, nor by another service token that replaces it.
 * - none: obtained with a client's token; never served again without upstream's word.
 *
 * What may be served without asking upstream about the very file or question:
 * - `grants()`, a memo: upstream answered this question to this identity within `authTtlMs`
 *   (revocation upstream takes effect within it).
 * - `servesFromIndex`: a file recorded in the identity's own scope, or public, while the repo
 *   is still public (decided once per repo and `authTtlMs`). Otherwise the file is asked
 *   upstream (a gated file granted to the service: once per file and TTL).
 * - Branch pins and API answers at a commit (immutable): to whoever `sees` their scope. A client
 *   token sees public pins only, and is always asked upstream online.
 * - `servesStale` (upstream cannot be asked: down, failing, or `offline: true`): what upstream
 *   last gave this identity (its own scope), and public content of a repo this process has not
 *   seen become restricted, to every caller (a client with its own token too). Content that
 *   needed a client's token fails closed.
 * Freshness is measured on one Clock's monotonic time; recorded times are its wall time.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { LRUCache } from 'lru-cache';
import { MirrorError } from '../errors.js';
import { systemClock, type Clock } from '../clock.js';
import { PromiseFlights } from '../mirror/flights.js';
import type { UpstreamApi } from '../upstream/hub-client.js';
import { isUnreachable } from '../upstream/upstream-errors.js';
import { apiTypeSegment, repoKey, type RepoRef } from './repo-ref.js';

/** The scope of a recording: public content, or what one service token was given. */
export type Scope = 'anonymous' | `service:${string}`;

export const PUBLIC_SCOPE: Scope = 'anonymous';

export interface Identity {
  readonly kind: 'anonymous' | 'service' | 'client';
  /** `Authorization` sent upstream; undefined for anonymous. Never logged or stored. */
  readonly auth: string | undefined;
  /** Memo and coalescing key: `anonymous`, `service`, or `client:<keyed hash>` (per process). */
  readonly key: string;
  /** Scope this identity's answers are recorded under; undefined: a client token (not reused). */
  readonly scope: Scope | undefined;
  /** Whether a recording of `scope` is knowledge this identity may use (its own, or public). */
  readonly sees: (scope: string) => boolean;
}

/** Whether a repo's content is public right now, as upstream says (unknown: it cannot be asked). */
export type Publicity = 'public' | 'restricted' | 'unknown';

export interface AccessPolicyOptions {
  /** Config `hfToken` ('' when unset). */
  hfToken: string;
  hub: UpstreamApi;
  /** How long upstream's grant (and a repo's publicity) is trusted. */
  authTtlMs: number;
  clock?: Clock;
}

export class AccessPolicy {
  /** The identity of clients that send no token: the service token if configured, else anonymous. */
  readonly tokenless: Identity;
  readonly clock: Clock;
  readonly #authTtlMs: number;
  readonly #hub: UpstreamApi;
  /** Per-process key for hashing client tokens: memo keys are useless outside this process. */
  readonly #tokenKey = randomBytes(32);
  readonly #publicity: LRUCache<string, { value: 'public' | 'restricted'; at: number }>;
  /** The last decision per repo, however old (the offline fallback's "as last seen"). */
  readonly #lastPublicity = new LRUCache<string, 'public' | 'restricted'>({ max: 10_000 });
  readonly #publicityFlights = new PromiseFlights<{ value: Publicity; until: number }>();

  constructor(opts: AccessPolicyOptions) {
    this.clock = opts.clock ?? systemClock;
    this.#authTtlMs = opts.authTtlMs;
    this.#hub = opts.hub;
    this.#publicity = new LRUCache({ max: 10_000 });
    this.tokenless = opts.hfToken ? serviceIdentity(opts.hfToken) : ANONYMOUS;
  }

  /** The identity of a client that sent its own `Authorization`. */
  client(authorization: string): Identity {
    const key = `client:${createHmac('sha256', this.#tokenKey).update(authorization).digest('base64url')}`;
    return { kind: 'client', auth: authorization, key, scope: undefined, sees: (scope) => scope === PUBLIC_SCOPE };
  }

  /** A memo of upstream's answers per identity and question, trusted for the grant TTL. */
  grants<T>(max = 50_000): GrantMemo<T> {
    return new GrantMemo<T>(this.clock, this.#authTtlMs, max);
  }

  /**
   * The scope to record an answer upstream just gave `who` about `repo` under: public for
   * anonymous answers, and for the service token's answers about a repo that is public now;
   * the service's own scope otherwise; undefined for a client token. Never throws.
   */
  async recordScope(who: Identity, repo: RepoRef): Promise<Scope | undefined> {
    if (who.kind !== 'service') return who.scope;
    try {
      return (await this.publicity(repo)) === 'public' ? PUBLIC_SCOPE : who.scope;
    } catch {
      return who.scope; // upstream's repo info unusable: keep it to the service
    }
  }

  /**
   * Whether a file recorded under `scope` may be served to `who` from the index, upstream
   * reachable: a scope it sees, of a repo still public. When the repo's publicity cannot be
   * asked, the offline rule decides. Throws a 502 when upstream's repo info is unusable.
   */
  async servesFromIndex(who: Identity, scope: string, repo: RepoRef): Promise<boolean> {
    return (await this.indexDecision(who, scope, repo)).serves;
  }

  /**
   * `servesFromIndex`, with how long the decision may be reused: `until` is the monotonic time
   * at which the repo's publicity must be asked again (the grant TTL after it was decided).
   * A decision taken by the offline rule (publicity unknown) is for this request only
   * (`until: -Infinity`), as is a refusal.
   */
  async indexDecision(who: Identity, scope: string, repo: RepoRef): Promise<{ serves: boolean; until: number }> {
    if (who.scope === undefined || !who.sees(scope)) return { serves: false, until: -Infinity };
    const publicity = await this.#publicityDecision(repo);
    if (publicity.value === 'unknown') return { serves: this.servesStale(who, scope, repo), until: -Infinity };
    return publicity.value === 'public' ? { serves: true, until: publicity.until } : { serves: false, until: -Infinity };
  }

  /**
   * Whether a recording of `scope` may be served to `who` when upstream cannot be asked: what
   * upstream last gave this very identity, or public content of a repo not last seen restricted.
   */
  servesStale(who: Identity, scope: string, repo: RepoRef): boolean {
    if (who.scope !== undefined && scope === who.scope) return true;
    return scope === PUBLIC_SCOPE && this.#lastPublicity.get(repoKey(repo)) !== 'restricted';
  }

  /**
   * Whether anonymous access to a repo stands: its info says `private: false` and not gated,
   * asked as the tokenless identity once per repo and grant TTL (the answer describes the repo,
   * whoever asks). `restricted` for private, gated, missing or refused; `unknown` when upstream
   * cannot be asked (network, timeout, 5xx). An unusable 200 is a 502.
   */
  async publicity(repo: RepoRef): Promise<Publicity> {
    return (await this.#publicityDecision(repo)).value;
  }

  /** The publicity and the monotonic time it stands until (`-Infinity` for `unknown`: not kept). */
  async #publicityDecision(repo: RepoRef): Promise<{ value: Publicity; until: number }> {
    const key = repoKey(repo);
    const known = this.#publicity.get(key);
    if (known && this.clock.monotonic() - known.at < this.#authTtlMs) return { value: known.value, until: known.at + this.#authTtlMs };
    return this.#publicityFlights.run(key, async () => {
      let res;
      try {
        res = await this.#hub.requestApi('GET', `/api/${apiTypeSegment(repo.type)}/${repo.id}`, this.tokenless.auth);
      } catch (err) {
        if (isUnreachable(err)) return UNKNOWN;
        throw err;
      }
      if (res.statusCode >= 500) return UNKNOWN;
      const what = `${apiTypeSegment(repo.type)}/${repo.id}`;
      const decided = res.statusCode === 200 ? publicityOf(res.body, headerText(res.headers['content-type']), what) : 'restricted';
      const at = this.clock.monotonic();
      this.#publicity.set(key, { value: decided, at });
      this.#lastPublicity.set(key, decided);
      return { value: decided, until: at + this.#authTtlMs };
    });
  }
}

const UNKNOWN = { value: 'unknown', until: -Infinity } as const;

/** Upstream's grants: one answer per (identity, question), trusted for the grant TTL at most. */
export class GrantMemo<T> {
  readonly #clock: Clock;
  readonly #ttlMs: number;
  readonly #entries: LRUCache<string, { value: T; until: number }>;

  constructor(clock: Clock, ttlMs: number, max: number) {
    this.#clock = clock;
    this.#ttlMs = ttlMs;
    this.#entries = new LRUCache({ max });
  }

  get(who: Identity, question: string): T | undefined {
    return this.lookup(who, question)?.value;
  }

  /** The answer with the monotonic time it is trusted until. */
  lookup(who: Identity, question: string): { value: T; until: number } | undefined {
    const key = `${who.key}|${question}`;
    const e = this.#entries.get(key);
    if (!e) return undefined;
    if (this.#clock.monotonic() < e.until) return e;
    this.#entries.delete(key);
    return undefined;
  }

  /**
   * Remembers an answer for the grant TTL, or for `maxMs` if shorter (a branch question must not
   * outlive its pin). Returns the monotonic time it is trusted until.
   */
  set(who: Identity, question: string, value: T, maxMs = Infinity): number {
    const until = this.#clock.monotonic() + Math.min(this.#ttlMs, maxMs);
    this.#entries.set(`${who.key}|${question}`, { value, until });
    return until;
  }
}

const ANONYMOUS: Identity = { kind: 'anonymous', auth: undefined, key: 'anonymous', scope: PUBLIC_SCOPE, sees: (scope) => scope === PUBLIC_SCOPE };

function serviceIdentity(token: string): Identity {
  // A fingerprint that names the token without revealing it: recordings made with one service
  // token are never handed to another (the operator may replace or remove hfToken).
  const fingerprint = createHash('sha256').update('hubcache service identity\0').update(token).digest('base64url').slice(0, 22);
  const scope: Scope = `service:${fingerprint}`;
  return { kind: 'service', auth: `Bearer ${token}`, key: 'service', scope, sees: (s) => s === PUBLIC_SCOPE || s === scope };
}

/** A 200 repo info → publicity; a body that is not the Hub's repo info is a 502 (never a guess). */
function publicityOf(body: Buffer, contentType: string | undefined, what: string): 'public' | 'restricted' {
  let info: unknown;
  try {
    info = JSON.parse(body.toString('utf8'));
  } catch {
    throw new MirrorError('UpstreamError', `Upstream's repo info for ${what} is not JSON (content type ${contentType ?? 'none'}): is the upstream a Hugging Face hub?`);
  }
  const fields = typeof info === 'object' && info !== null && !Array.isArray(info) ? (info as { private?: unknown; gated?: unknown }) : undefined;
  if (typeof fields?.private !== 'boolean') {
    throw new MirrorError('UpstreamError', `Upstream's repo info for ${what} has no "private" field: is the upstream a Hugging Face hub?`);
  }
  return fields.private === false && (fields.gated === false || fields.gated === undefined) ? 'public' : 'restricted';
}

function headerText(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}
