/**
 * Fill leases (src/cluster/fill-leases.ts) on a real PostgreSQL, with several "replicas": each a
 * FillLeases on a pool of its own, as separate processes would have. Expiry is forced by moving
 * expires_at in the database (a test-only update) or awaited as an event, never slept for; wake-ups
 * are identified by their reason, so a notification is told apart from the expiry timer.
 */
import crypto from 'node:crypto';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FILL_LEASE_MIGRATIONS } from '../../src/cluster/fill-lease-schema.js';
import { FillLeases, LeaseLostError, type Claim, type FillLeasesOptions, type Lease, type WakeReason } from '../../src/cluster/fill-leases.js';
import { postgresSkipReason, startPostgres, type TestPostgres } from '../support/postgres.js';
import { waitFor, within } from '../support/wait-for.js';

const LONG_TTL = 60_000;

/**
 * A pool re-emits an idle client's error (the server shutting down at the end, while pool.end's
 * clients are still closing) as its own 'error' event: the owner of a pool listens to it.
 */
function quiet(pool: pg.Pool): pg.Pool {
  pool.on('error', () => {});
  return pool;
}

describe.skipIf(postgresSkipReason !== undefined)(`fill leases in PostgreSQL${postgresSkipReason ? ` (skipped: ${postgresSkipReason})` : ''}`, () => {
  let server: TestPostgres;
  let dbUrl: string;
  let admin: pg.Pool;
  const pools: pg.Pool[] = [];
  const opened: FillLeases[] = [];
  /** Three replicas with a long TTL: nothing expires unless a test says so. */
  let replicas: FillLeases[];

  async function replica(name: string, opts: Partial<FillLeasesOptions> = {}): Promise<{ leases: FillLeases; pool: pg.Pool }> {
    const pool = quiet(new pg.Pool({ connectionString: dbUrl, max: 10 }));
    pools.push(pool);
    const leases = await FillLeases.open({ pool, replicaId: name, peerUrl: `http://${name}.test:8080/`, leaseTtlMs: LONG_TTL, ...opts });
    opened.push(leases);
    return { leases, pool };
  }

  const newKey = (): string => `sha256/${crypto.randomBytes(32).toString('hex')}`;

  /** The test-only expiry: the lease's row now lies in the past on the database's clock. */
  async function forceExpire(key: string): Promise<void> {
    const r = await admin.query(`UPDATE fill_leases SET expires_at = now() - interval '1 millisecond' WHERE blob_key = $1`, [key]);
    expect(r.rowCount).toBe(1);
  }

  async function owned(leases: FillLeases, key: string): Promise<Lease> {
    const claim = await leases.acquire(key);
    if (!claim.owned) throw new Error(`expected to own ${key}, held by ${claim.holder.ownerId}`);
    return claim.lease;
  }

  async function held(leases: FillLeases, key: string): Promise<Extract<Claim, { owned: false }>> {
    const claim = await leases.acquire(key);
    if (claim.owned) throw new Error(`expected ${key} to be held by another replica`);
    return claim;
  }

  /** Resolves with the lease's loss (the abort event), or rejects after the generous deadline. */
  function lossOf(lease: Lease): Promise<LeaseLostError> {
    const lost = new Promise<LeaseLostError>((resolve) => {
      if (lease.signal.aborted) resolve(lease.signal.reason as LeaseLostError);
      else lease.signal.addEventListener('abort', () => resolve(lease.signal.reason as LeaseLostError), { once: true });
    });
    return within(lost, { what: `loss of the lease on ${lease.blobKey}` });
  }

  beforeAll(async () => {
    server = await startPostgres();
    dbUrl = await server.createDatabase('leases');
    admin = quiet(new pg.Pool({ connectionString: dbUrl, max: 2 }));
    // Opened at once: the migrations run concurrently, under the advisory lock.
    replicas = await Promise.all(['r1', 'r2', 'r3'].map(async (n) => (await replica(n)).leases));
  });

  afterAll(async () => {
    for (const l of opened) await l.close();
    for (const p of pools) await p.end().catch(() => {});
    await admin?.end();
    await server?.stop();
  });

  it('migrates once, to its own schema version, whoever opens first; opening again changes nothing', async () => {
    const v = await admin.query('SELECT version FROM fill_lease_schema_version');
    expect(v.rows).toEqual([{ version: FILL_LEASE_MIGRATIONS.length }]);
    await replica('r-again');
    const again = await admin.query('SELECT version FROM fill_lease_schema_version');
    expect(again.rows).toEqual([{ version: FILL_LEASE_MIGRATIONS.length }]);
  });

  it('20 concurrent acquires of one blob from 3 replicas: exactly one owner, and every other sees that owner', async () => {
    for (let round = 0; round < 3; round++) {
      const key = newKey();
      const claims = await Promise.all(Array.from({ length: 20 }, (_, i) => replicas[i % 3]!.acquire(key)));
      const owners = claims.filter((c) => c.owned);
      expect(owners).toHaveLength(1);
      const lease = (owners[0] as Extract<Claim, { owned: true }>).lease;
      const ownerIndex = claims.indexOf(owners[0]!) % 3;
      for (const c of claims) {
        if (c.owned) continue;
        expect(c.holder.ownerId).toBe(replicas[ownerIndex]!.replicaId);
        expect(c.holder.url).toBe(replicas[ownerIndex]!.peerUrl);
        expect(c.holder.token).toBe(lease.token);
        c.cancel();
      }

      // The same race on an expired lease: one takeover, with a later token.
      await forceExpire(key);
      const takeovers = await Promise.all(Array.from({ length: 20 }, (_, i) => replicas[(i + round) % 3]!.acquire(key)));
      const newOwners = takeovers.filter((c) => c.owned);
      expect(newOwners).toHaveLength(1);
      const next = (newOwners[0] as Extract<Claim, { owned: true }>).lease;
      expect(next.token).toBeGreaterThan(lease.token);
      for (const c of takeovers) if (!c.owned) expect(c.holder.token).toBe(next.token);
      for (const c of takeovers) if (!c.owned) c.cancel();
      expect(await next.release()).toBe(true);
      expect(await lease.renew()).toBe(false);
    }
  });

  it('a live lease is not taken over; an expired one is, with a strictly greater token each time, and the stale owner is refused', async () => {
    const key = newKey();
    let current = await owned(replicas[0]!, key);
    const first = current.token;
    (await held(replicas[1]!, key)).cancel();
    const tokens = [first];
    for (let i = 1; i <= 6; i++) {
      const stale = current;
      await forceExpire(key);
      current = await owned(replicas[i % 3]!, key);
      tokens.push(current.token);
      expect(current.token).toBeGreaterThan(stale.token);
      // The stale owner: told by the takeover's notification, and refused by the row.
      expect((await lossOf(stale)).reason).toBe('taken-over');
      expect(await replicas[0]!.renew(key, stale.token)).toBeUndefined();
      expect(await stale.renew()).toBe(false);
      expect(await stale.finish()).toBe(false);
      expect(await replicas[0]!.release(key, stale.token)).toBe(false);
      // The current owner is untouched by all that.
      expect(current.lost).toBe(false);
      expect((await replicas[2]!.peek(key))?.token).toBe(current.token);
    }
    expect([...tokens].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0))).toEqual(tokens);
    expect(await current.finish()).toBe(true);
    expect(await replicas[0]!.peek(key)).toBeUndefined();
  });

  it('superseding a live holder found unable to serve: its token is taken over at once by exactly one of 10 concurrent replicas; a stale token supersedes nothing', async () => {
    const key = newKey();
    const dead = await owned(replicas[0]!, key); // a live row (TTL 60 s): its owner "stopped answering"
    const claims = await Promise.all(Array.from({ length: 10 }, (_, i) => replicas[1 + (i % 2)]!.acquire(key, { supersede: dead.token })));
    const winners = claims.flatMap((c) => (c.owned ? [c.lease] : []));
    expect(winners).toHaveLength(1);
    const winner = winners[0]!;
    expect(winner.token).toBeGreaterThan(dead.token);
    for (const c of claims) if (!c.owned) {
      expect(c.holder.token).toBe(winner.token);
      c.cancel();
    }
    expect((await lossOf(dead)).reason).toBe('taken-over');
    expect(await dead.finish()).toBe(false);
    // The old token again (a late replica that saw the dead holder): the new owner keeps the lease.
    (await held(replicas[0]!, key)).cancel();
    const late = await replicas[0]!.acquire(key, { supersede: dead.token });
    expect(late.owned).toBe(false);
    if (!late.owned) late.cancel();
    expect(winner.lost).toBe(false);
    expect(await winner.finish()).toBe(true);
  });

  it("the lease's lost-signal fires when another replica takes over, without waiting for its next renewal", async () => {
    const key = newKey();
    const lease = await owned(replicas[0]!, key);
    await forceExpire(key);
    const thief = await owned(replicas[1]!, key);
    const loss = await lossOf(lease);
    expect(loss).toBeInstanceOf(LeaseLostError);
    expect(loss.reason).toBe('taken-over');
    expect(loss.token).toBe(lease.token);
    expect(thief.lost).toBe(false);
    expect(await thief.release()).toBe(true);
  });

  it('release wakes a waiter in another replica through NOTIFY (TTL 60 s: not the expiry timer), and finish does too', async () => {
    const key = newKey();
    const lease = await owned(replicas[0]!, key);
    const waiting = await held(replicas[1]!, key);
    expect(waiting.holder.ownerId).toBe('r1');
    expect(waiting.holder.remainingMs).toBeGreaterThan(LONG_TTL / 2);
    expect(await lease.release()).toBe(true);
    expect(await within(waiting.changed, { what: 'the waiter to wake' })).toBe('released' satisfies WakeReason);

    const second = await owned(replicas[1]!, key);
    const waiting2 = await held(replicas[2]!, key);
    expect(waiting2.holder.ownerId).toBe('r2');
    expect(await second.finish()).toBe(true);
    expect(await within(waiting2.changed, { what: 'the waiter to wake' })).toBe('finished' satisfies WakeReason);
    expect(second.lost).toBe(false);
  });

  it('finish inside the committer\'s transaction: rolled back, the lease stays; committed, it is gone and waiters hear "finished"; a stale token is refused in the transaction too', async () => {
    const key = newKey();
    const lease = await owned(replicas[0]!, key);
    const client = await admin.connect();
    try {
      await client.query('BEGIN');
      expect(await replicas[0]!.confirm(key, lease.token, client)).toBe(true);
      expect(await replicas[0]!.finish(key, lease.token, client)).toBe(true);
      await client.query('ROLLBACK');
      expect((await replicas[1]!.peek(key))?.token).toBe(lease.token);

      const waiting = await held(replicas[1]!, key);
      await client.query('BEGIN');
      expect(await lease.finish(client)).toBe(true);
      await client.query('COMMIT');
      expect(await within(waiting.changed, { what: 'the waiter to wake' })).toBe('finished');
      expect(await replicas[1]!.peek(key)).toBeUndefined();

      const again = await owned(replicas[1]!, key);
      await forceExpire(key);
      const thief = await owned(replicas[2]!, key);
      await client.query('BEGIN');
      expect(await replicas[1]!.confirm(key, again.token, client)).toBe(false);
      expect(await again.finish(client)).toBe(false);
      await client.query('ROLLBACK');
      expect(again.lost).toBe(true);
      expect((await replicas[0]!.peek(key))?.token).toBe(thief.token);
      expect(await thief.release()).toBe(true);
    } finally {
      client.release();
    }
  });

  it('a lease renews itself while the fill runs and publishes its progress', async () => {
    const { leases } = await replica('r-renew', { leaseTtlMs: 1_000, renewIntervalMs: 50 });
    const key = newKey();
    const lease = await owned(leases, key);
    const initial = (await replicas[0]!.peek(key))!.expiresAt.getTime();
    lease.progress(12_345);
    // Renewals move the database's expiry forward: wait until it lies two TTLs past the first.
    const moved = await waitFor(
      async () => {
        const h = await replicas[0]!.peek(key);
        return h && h.expiresAt.getTime() > initial + 2 * 1_000 ? h : undefined;
      },
      { what: 'renewals to move expires_at two TTLs forward', intervalMs: 100 },
    );
    expect(moved.token).toBe(lease.token);
    expect(moved.bytesDurable).toBe(12_345);
    const waiting = await held(replicas[1]!, key);
    expect(waiting.holder.bytesDurable).toBe(12_345);
    expect(lease.lost).toBe(false);
    expect(await lease.release()).toBe(true);
    expect(await within(waiting.changed, { what: 'the waiter to wake' })).toBe('released');
  });

  it('a killed owner (its pool ended, nothing released) is taken over after its expiry; its lease reports unreachable', async () => {
    const { leases: doomed, pool } = await replica('r-doomed', { leaseTtlMs: 1_500, renewIntervalMs: 200 });
    const key = newKey();
    const lease = await owned(doomed, key);
    // The "kill": no release, no more statements, no more notifications.
    await doomed.close();
    await pool.end();
    const reasons: WakeReason[] = [];
    const taken = await within(
      (async () => {
        for (;;) {
          const claim = await replicas[1]!.acquire(key);
          if (claim.owned) return claim.lease;
          expect(claim.holder.ownerId).toBe('r-doomed');
          reasons.push(await claim.changed);
        }
      })(),
      { what: 'the dead owner to be taken over' },
    );
    expect(reasons).toContain('expired');
    expect(taken.token).toBeGreaterThan(lease.token);
    expect((await lossOf(lease)).reason).toBe('unreachable');
    expect(await replicas[1]!.finish(key, lease.token)).toBe(false);
    expect(await taken.finish()).toBe(true);
  });

  it("the listener reconnects after its backend is terminated: waiters re-check ('reconnected') and later releases still wake them", async () => {
    const { leases: owner } = await replica('r-owner');
    const { leases: waiter } = await replica('r-waiter');
    const key = newKey();
    const lease = await owned(owner, key);
    const first = await held(waiter, key);
    const killed = await admin.query('SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1', [waiter.listenerName]);
    expect(killed.rows).toEqual([{ ok: true }]);
    expect(await within(first.changed, { what: 'the waiter to hear of the reconnect' })).toBe('reconnected');
    expect(waiter.listening).toBe(true);

    const second = await held(waiter, key);
    expect(await lease.release()).toBe(true);
    expect(await within(second.changed, { what: 'the waiter to wake after the reconnect' })).toBe('released');

    // The owner's listener dropping does not lose its lease: it re-checks the row and keeps it.
    const mine = await owned(owner, key);
    const relistened = new Promise<void>((resolve) => {
      const stop = owner.subscribe(key, (event) => {
        if (event !== 'reconnected') return;
        stop();
        resolve();
      });
    });
    const killedOwner = await admin.query('SELECT pg_terminate_backend(pid) AS ok FROM pg_stat_activity WHERE application_name = $1', [owner.listenerName]);
    expect(killedOwner.rows).toEqual([{ ok: true }]);
    await within(relistened, { what: 'the owner to listen again' });
    expect(mine.lost).toBe(false);
    expect(await mine.renew()).toBe(true);
    expect(await mine.release()).toBe(true);
  });

  it('sweep removes long-expired rows, after which the dead owner is still refused', async () => {
    const key = newKey();
    const lease = await owned(replicas[0]!, key);
    await admin.query(`UPDATE fill_leases SET expires_at = now() - interval '1 hour' WHERE blob_key = $1`, [key]);
    expect(await replicas[1]!.sweep(60_000)).toBeGreaterThanOrEqual(1);
    expect(await replicas[1]!.peek(key)).toBeUndefined();
    expect(await lease.renew()).toBe(false);
    expect(await lease.finish()).toBe(false);
  });

  it('refuses a peer URL with credentials and a renewal interval not below the TTL', async () => {
    const pool = quiet(new pg.Pool({ connectionString: dbUrl, max: 1 }));
    pools.push(pool);
    await expect(FillLeases.open({ pool, replicaId: 'x', peerUrl: 'http://user:secret@x:8080/' })).rejects.toThrow(/credentials/);
    await expect(FillLeases.open({ pool, replicaId: 'x', peerUrl: 'http://x:8080/', leaseTtlMs: 1_000, renewIntervalMs: 1_000 })).rejects.toThrow(/renewIntervalMs/);
  });
});
