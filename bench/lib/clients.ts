/**
 * The client processes: a few forked children (client-child.ts), so clients share an event loop
 * neither with the fake hub (this process; its throttle must tick on time) nor with the servers,
 * and many clients spread over several cores. A batch's GETs are dealt round-robin over the
 * processes and all start at once.
 */
import { fileURLToPath } from 'node:url';
import { forkChild, type Child } from './child.js';
import type { GetsCall, GetsReply } from './client-child.js';
import type { GetOutcome, GetSpec } from './http-get.js';

export interface Batch {
  outcomes: GetOutcome[];
  /** From the first start to the last end, ms. */
  wallMs: number;
  /** CPU seconds of each client process that took part. */
  cpuSeconds: number[];
  /** The busiest client process's CPU as a share of one core over the batch (0..1). */
  busiestClientShare: number;
}

export interface ClientPool {
  readonly size: number;
  readonly pids: number[];
  /** Runs `specs` all at once over at most `procs` processes; `stopAfterMs` ends the batch early. */
  gets(specs: GetSpec[], opts?: { stopAfterMs?: number; procs?: number }): Promise<Batch>;
  children: Child[];
  close(): Promise<void>;
}

const CLIENT_CHILD = fileURLToPath(new URL('./client-child.ts', import.meta.url));

export async function startClientPool(procs: number): Promise<ClientPool> {
  const children = await Promise.all(Array.from({ length: procs }, (_, i) => forkChild(CLIENT_CHILD, [], `clients-${i}`)));
  const gets = async (specs: GetSpec[], opts: { stopAfterMs?: number; procs?: number } = {}): Promise<Batch> => {
    const n = Math.max(1, Math.min(opts.procs ?? children.length, children.length, specs.length));
    const shares: { idx: number[]; specs: GetSpec[] }[] = Array.from({ length: n }, () => ({ idx: [], specs: [] }));
    specs.forEach((s, i) => {
      const share = shares[i % n]!;
      share.idx.push(i);
      share.specs.push(s);
    });
    const replies = await Promise.all(
      shares.map((share, k) => children[k]!.call<GetsReply>({ specs: share.specs, ...(opts.stopAfterMs !== undefined ? { stopAfterMs: opts.stopAfterMs } : {}) } satisfies GetsCall)),
    );
    const outcomes = new Array<GetOutcome>(specs.length);
    replies.forEach((r, k) => r.outcomes.forEach((o, j) => (outcomes[shares[k]!.idx[j]!] = o)));
    const start = Math.min(...outcomes.map((o) => o.startMs));
    const end = Math.max(...outcomes.map((o) => o.endMs));
    const wallMs = end - start;
    const cpuSeconds = replies.map((r) => r.cpuUs / 1e6);
    return { outcomes, wallMs, cpuSeconds, busiestClientShare: wallMs > 0 ? Math.max(...cpuSeconds) / (wallMs / 1000) : NaN };
  };
  return {
    size: children.length,
    pids: children.map((c) => c.pid),
    gets,
    children,
    close: async () => {
      await Promise.allSettled(children.map((c) => c.close()));
    },
  };
}
