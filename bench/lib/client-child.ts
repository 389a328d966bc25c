/**
 * Child-process entry of the bench's clients: runs a batch of GETs (http-get.ts) all at once and
 * answers their outcomes plus this process's CPU time over the batch.
 */
import { runChild } from './child.js';
import { runGets, type GetOutcome, type GetSpec } from './http-get.js';

export interface GetsCall {
  specs: GetSpec[];
  stopAfterMs?: number;
}

export interface GetsReply {
  outcomes: GetOutcome[];
  cpuUs: number;
}

runChild(() =>
  Promise.resolve({
    info: {},
    handle: async (body: unknown): Promise<GetsReply> => {
      const call = body as GetsCall;
      const c0 = process.cpuUsage();
      const outcomes = await runGets(call.specs, call.stopAfterMs);
      const c = process.cpuUsage(c0);
      return { outcomes, cpuUs: c.user + c.system };
    },
    close: () => Promise.resolve(),
  }),
);
