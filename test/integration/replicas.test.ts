/**
 * Replicas as one mirror, on several hosts: three real mirror processes, each in its own network
 * namespace (test/support/netns.ts: hosts on one bridged /24), sharing one PostgreSQL (index and
 * fill leases), one Swift s3api bucket and one fake hub, which run in the test process's
 * namespace and are reached through the bridge's gateway address (PostgreSQL and Swift listen on
 * 127.0.0.1 only: through a relay). Each replica listens on port 8080 of its own host and names
 * itself to the others by peerUrl. Assertions are on the hub's counters, bytes and digests;
 * ordering comes from events (a barrier in the hub's body, a client's received bytes), never from
 * timing.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { makeContent } from '../support/content.js';
import { download, header, type Download } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { startMirrorProcess, type MirrorProcess } from '../support/mirror-process.js';
import { createNetwork, netnsSkipReason, type Network, type NetnsHost } from '../support/netns.js';
import { postgresSkipReason, startPostgres, type TestPostgres } from '../support/postgres.js';
import { startSwiftS3, swiftS3SkipReason, type SwiftS3 } from '../support/swift-s3.js';
import { startTcpRelay, type TcpRelay as Relay } from '../support/tcp-relay.js';
import { waitFor } from '../support/wait-for.js';

const MiB = 1024 * 1024;
const skip = netnsSkipReason ?? postgresSkipReason ?? swiftS3SkipReason;
const PORT = 8080;
/** The herd's file (MiB): small enough for CI here; HUBCACHE_TEST_REPLICAS_MIB=1024 runs the 1 GiB herd. */
const HERD_MIB = Number(process.env.HUBCACHE_TEST_REPLICAS_MIB ?? 96);

let net: Network;
let pg: TestPostgres;
let swift: SwiftS3;
let pgRelay: Relay;
let s3Relay: Relay;
const cleanup: Array<() => Promise<void>> = [];

beforeAll(async () => {
  if (skip) return;
  net = createNetwork({ hosts: 3 });
  [pg, swift] = await Promise.all([startPostgres(), startSwiftS3()]);
  const port = (url: string): number => Number(new URL(url).port);
  [pgRelay, s3Relay] = await Promise.all([
    startTcpRelay(port(pg.adminUrl), '127.0.0.1', net.gateway),
    startTcpRelay(port(swift.endpoint), '127.0.0.1', net.gateway),
  ]);
}, 180_000);

// Each test's replicas and hub go with it: the next test's replicas take the same hosts and port.
afterEach(async () => {
  for (const c of cleanup.splice(0).reverse()) await c().catch(() => undefined);
});

afterAll(async () => {
  await Promise.all([pgRelay?.close(), s3Relay?.close()]);
  await Promise.all([pg?.stop(), swift?.stop()]);
  net?.destroy();
});

/** `url` with its host and port replaced by the relay's (the replicas' way to it). */
function viaRelay(url: string, relay: Relay): string {
  const u = new URL(url);
  u.hostname = relay.host;
  u.port = String(relay.port);
  return u.toString().replace(/\/$/, '');
}

async function hub(): Promise<FakeHub> {
  const h = await startFakeHub({ host: net.gateway });
  cleanup.push(() => h.stop());
  return h;
}

interface Replica {
  id: string;
  host: NetnsHost;
  url: string;
  dataDir: string;
  proc: MirrorProcess;
}

/** A cluster's shared settings: one database, one bucket, one secret. */
async function clusterEnv(): Promise<Record<string, string>> {
  const [indexUrl, bucket] = await Promise.all([pg.createDatabase('replicas'), swift.bucket('replicas')]);
  return {
    HUBCACHE_CLUSTER_SECRET: `cluster-${randomBytes(16).toString('hex')}`,
    HUBCACHE_INDEX: 'postgres',
    HUBCACHE_INDEX_URL: viaRelay(indexUrl, pgRelay),
    HUBCACHE_FILL_LEASE_TTL_SECONDS: '30',
    HUBCACHE_STORAGE: 's3',
    HUBCACHE_S3_ENDPOINT: viaRelay(swift.endpoint, s3Relay),
    HUBCACHE_S3_BUCKET: bucket,
    HUBCACHE_S3_REGION: swift.region,
    HUBCACHE_S3_FORCE_PATH_STYLE: 'true',
    HUBCACHE_S3_ACCESS_KEY_ID: swift.accessKeyId,
    HUBCACHE_S3_SECRET_ACCESS_KEY: swift.secretAccessKey,
    // Barriers hold upstream bodies on purpose; a client waiting at a held connection would have it
    // replaced after upstreamStallSeconds (segmented.test.ts tests that), and these tests count the
    // requests and hold the moments: no stall takeovers here.
    HUBCACHE_UPSTREAM_STALL_SECONDS: '0',
    // One upstream stream per fill: "at 40 %" is then a point of one body (the barrier).
    HUBCACHE_SEGMENT_MIN_BYTES: String(4096 * MiB),
  };
}

/** Replica `i` on host `i` (again: the same host and data dir, after a kill). */
async function startReplica(h: FakeHub, shared: Record<string, string>, i: number, again?: Replica): Promise<Replica> {
  const host = net.hosts[i]!;
  const id = `r${i + 1}`;
  const dataDir = again?.dataDir ?? fs.mkdtempSync(path.join(os.tmpdir(), `hubcache-replica-${id}-`));
  const env = { ...shared, HUBCACHE_REPLICA_ID: id, HUBCACHE_PEER_URL: `http://${host.address}:${PORT}` };
  const proc = await startMirrorProcess(h.url, dataDir, env, ['--port', String(PORT)], { host: host.address, spawn: (cmd, args, opts) => host.spawn(cmd, args, opts) });
  cleanup.push(() => proc.kill('SIGTERM'));
  if (!again) cleanup.push(async () => fs.rmSync(dataDir, { recursive: true, force: true }));
  return { id, host, url: proc.url, dataDir, proc };
}

let seed = 14_700;
function addFile(h: FakeHub, size: number) {
  const id = `org/replicas-${seed}`;
  const content = makeContent(size, seed++);
  h.addRepo({ id, files: { 'model.safetensors': content } });
  const sha256 = h.fileInfo({ id }, 'model.safetensors').sha256;
  return { id, size, sha256, path: `/${id}/resolve/main/model.safetensors` };
}
type File = ReturnType<typeof addFile>;

/** The file's body as the hub's CDN sent it: GETs (with their Range) and bytes. */
function cdnBodies(h: FakeHub, f: File) {
  const gets = h.requests.filter((q) => q.server === 'cdn' && q.method === 'GET' && q.path.includes(f.sha256));
  return { ranges: gets.map((q) => q.headers.range as string | undefined), bytes: gets.reduce((n, q) => n + q.bytesSent, 0) };
}

/** The hub's resolve GETs of the file (what starts a fill; HEADs are metadata). */
const resolveGets = (h: FakeHub, f: File): number => h.count({ server: 'hub', method: 'GET', pathIncludes: `/${f.id}/resolve/` });

/** Requests the replica served on its internal endpoint (its request log). */
const internalReads = (r: Replica): number => r.proc.output.filter((l) => l.includes('"path":"/internal/v1/blobs/')).length;

async function metric(r: Replica, name: string): Promise<number> {
  const text = await (await fetch(`${r.url}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return Number(line?.split(' ')[1] ?? NaN);
}

function expectRight(d: Download, f: File): void {
  expect([d.status, d.complete, d.sha256, d.error]).toEqual([200, true, f.sha256, undefined]);
}

describe.skipIf(skip !== undefined)(`three replicas on three hosts, one PostgreSQL, one bucket and one hub${skip ? ` (skipped: ${skip})` : ''}`, () => {
  it('a herd of 11 clients spread over the 3 replicas on one cold file: one upstream download, every client right, the non-owners stream it while it runs', async () => {
    const h = await hub();
    const shared = await clusterEnv();
    const replicas = await Promise.all([0, 1, 2].map((i) => startReplica(h, shared, i)));
    const f = addFile(h, HERD_MIB * MiB);
    const hold = 40 * MiB;
    const barrier = h.setFault({ server: 'cdn', pathIncludes: f.sha256, method: 'GET' }, { kind: 'barrier', atBytes: hold, times: 1 });

    const received = new Array<number>(11).fill(0);
    const clients = received.map((_, i) => download(`${replicas[i % 3]!.url}${f.path}`, { keepBody: false, onProgress: (n) => (received[i] = n) }));
    await barrier.reached;
    // The owner's upstream body is held at 40 %: every client, on every replica, gets bytes now.
    await waitFor(() => received.every((n) => n >= 8 * MiB), { what: 'every client to receive bytes while the one upstream body is held', timeoutMs: 60_000 });
    expect(cdnBodies(h, f).ranges).toHaveLength(1);
    barrier.release();

    const results = await Promise.all(clients);
    for (const r of results) expectRight(r, f);
    expect(resolveGets(h, f)).toBe(1);
    const body = cdnBodies(h, f);
    expect(body.ranges).toEqual([undefined]);
    expect(body.bytes).toBe(f.size);
    // The two other replicas streamed from the owner: one internal read each (a peer is not segmented).
    await waitFor(() => replicas.some((r) => internalReads(r) === 2), { what: "the owner's log of the two internal reads" });
    expect(replicas.map(internalReads).sort()).toEqual([0, 0, 2]);
    for (const r of results) expect(header(r, 'x-mirror-cache')).toMatch(/^(miss|joined)$/);

    // Each replica's metrics count what it took from upstream, not what it streamed from the owner.
    const upstreamBytes = await Promise.all(replicas.map((r) => metric(r, 'hubcache_upstream_bytes_total{kind="file"}')));
    const written = await Promise.all(replicas.map((r) => metric(r, 'hubcache_fill_bytes_total')));
    expect(upstreamBytes.sort((a, b) => a - b)).toEqual([0, 0, f.size]);
    expect(written).toEqual([f.size, f.size, f.size]);

    // Committed: every replica serves it from the shared store, upstream sees nothing more.
    const again = await Promise.all(replicas.map((r) => download(`${r.url}${f.path}`, { keepBody: false })));
    for (const r of again) expectRight(r, f);
    expect(again.map((r) => header(r, 'x-mirror-cache'))).toEqual(['hit', 'hit', 'hit']);
    expect(resolveGets(h, f)).toBe(1);
    for (const r of replicas) for (const line of r.proc.output) expect(line).not.toContain(shared.HUBCACHE_CLUSTER_SECRET);
  }, Math.max(120_000, HERD_MIB * 400));

  it('the owner killed with -9 at 40 %: exactly one other replica takes the fill over at its offset, every client of the survivors gets the right bytes, and the owner restarted serves from the shared store', async () => {
    const h = await hub();
    const shared = await clusterEnv();
    const [r1, r2, r3] = await Promise.all([0, 1, 2].map((i) => startReplica(h, shared, i)));
    const f = addFile(h, 80 * MiB);
    const at = Math.floor(f.size * 0.4);
    const barrier = h.setFault({ server: 'cdn', pathIncludes: f.sha256, method: 'GET' }, { kind: 'barrier', atBytes: at, times: 1 });

    // r1's client first: r1 takes the lease and fills from upstream.
    const onOwner = download(`${r1!.url}${f.path}`, { keepBody: false });
    await barrier.reached;
    const received = [0, 0, 0, 0];
    const survivors = received.map((_, i) => download(`${[r2, r3][i % 2]!.url}${f.path}`, { keepBody: false, onProgress: (n) => (received[i] = n) }));
    await waitFor(() => received.every((n) => n >= at - 4 * MiB), { what: "the survivors' clients to get what the owner holds", timeoutMs: 60_000 });

    await r1!.proc.kill('SIGKILL');
    barrier.release();
    const results = await Promise.all(survivors);
    for (const r of results) expectRight(r, f);
    expect((await onOwner).complete).toBe(false);

    // Upstream: the dead owner's body, then ONE resume at the offset the new owner held.
    const body = cdnBodies(h, f);
    expect(body.ranges).toHaveLength(2);
    expect(body.ranges[0]).toBeUndefined();
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(body.ranges[1] ?? '')?.[1]);
    expect(resumedAt).toBeGreaterThanOrEqual(at - 4 * MiB);
    expect(resumedAt).toBeLessThanOrEqual(at);
    expect(body.bytes).toBeLessThanOrEqual(f.size + 4 * MiB + at - resumedAt);

    // r1 back on its port and data dir: the blob is a hit from the shared store and index.
    const back = await startReplica(h, shared, 0, r1);
    const fromBack = await download(`${back.url}${f.path}`, { keepBody: false });
    expectRight(fromBack, f);
    expect(header(fromBack, 'x-mirror-cache')).toBe('hit');
    expect(cdnBodies(h, f).ranges).toHaveLength(2);
    expect(resolveGets(h, f)).toBe(2); // the dead owner's and the new owner's
  });
});
