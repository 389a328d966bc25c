/**
 * Child-process entry for the benchmark's clients (see client.ts). The source bytes that bodies
 * are compared with are regenerated here from their seed (makeContent is deterministic), so no
 * 256 MiB buffer crosses the IPC channel; the last two are kept.
 *
 *   argv: <max HEAD sockets per origin>
 */
import { makeContent } from '../../test/support/content.js';
import { runChild } from './child.js';
import { ClientOps, type ClientCall, type ContentRef } from './client.js';

const cache = new Map<string, Buffer>();
function content(ref: ContentRef): Buffer {
  const key = `${ref.seed}:${ref.size}`;
  let buf = cache.get(key);
  if (!buf) {
    buf = makeContent(ref.size, ref.seed);
    cache.set(key, buf);
    if (cache.size > 2) cache.delete(cache.keys().next().value!);
  }
  return buf;
}

runChild(() => {
  const ops = new ClientOps(content, Number(process.argv[2] ?? 16));
  return Promise.resolve({
    info: {},
    handle: (body: unknown) => {
      const call = body as ClientCall;
      return call.op === 'gets' ? ops.gets(call.spec) : ops.heads(call.spec);
    },
    close: () => ops.close(),
  });
});
