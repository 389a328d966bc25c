/**
 * `hubcache prefetch` and `hubcache jobs`: the real CLI against the real mirror (through its
 * admin API) and the fake hub, whose counters say exactly which files crossed the WAN.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent, sha256Hex } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub } from '../support/fake-hub.js';
import { runCli, startMirrorProcess } from '../support/mirror-process.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';

const MiB = 1024 * 1024;
const ADMIN = 'admin-secret-0123456789';
const GRANTED = 'hf_granted_prefetch_token';
let hub: FakeHub;
const tmpDirs: string[] = [];

beforeAll(async () => {
  hub = await startFakeHub({ treePageSize: 3 });
  hub.addKnownToken('hf_someone_else');
});
afterAll(async () => {
  await hub?.stop();
  for (const d of tmpDirs) fs.rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-prefetch-'));
  tmpDirs.push(d);
  return d;
}

async function cli(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; output: string[] }> {
  const run = runCli(args, { HUBCACHE_ADMIN_TOKEN: ADMIN, HF_TOKEN: '', ...env });
  const { code } = await run.exited;
  return { code, output: run.output };
}

/** GETs of a file's content upstream: the CDN for LFS files, the hub's /resolve/ for regular ones. */
function contentGets(repoId: string, file: string): number {
  const info = hub.fileInfo({ id: repoId }, file);
  return info.lfs ? hub.count({ server: 'cdn', method: 'GET', pathIncludes: info.sha256 }) : hub.count({ server: 'hub', method: 'GET', pathIncludes: `/${repoId}/resolve/${info.commit}/${file}` }) + hub.count({ server: 'hub', method: 'GET', pathIncludes: `/${repoId}/resolve/main/${file}` });
}

// Barriers hold upstream bodies on purpose; a client waiting at a held connection would have it
// replaced after upstreamStallSeconds (segmented.test.ts tests that), and these tests count the
// requests and hold the moments: no stall takeovers here.
const NO_TAKEOVER_ENV = { HUBCACHE_UPSTREAM_STALL_SECONDS: '0' };

async function withMirror<T>(fn: (m: TestMirror) => Promise<T>): Promise<T> {
  const m = await startMirror(hub.url, { adminToken: ADMIN, upstreamStallSeconds: 0 });
  try {
    return await fn(m);
  } finally {
    await m.destroy();
  }
}

async function adminGet<T>(url: string): Promise<T> {
  const res = await fetch(url, { headers: { authorization: `Bearer ${ADMIN}` } });
  expect(res.status).toBe(200);
  return (await res.json()) as T;
}

interface JobJson {
  id: string;
  state: string;
  progress: { itemsDone: number; itemsFailed: number; itemsTotal: number | null };
}

async function waitForJob(baseUrl: string, id: string, accept: (j: JobJson) => boolean): Promise<JobJson> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const { job } = await adminGet<{ job: JobJson }>(`${baseUrl}/admin/jobs/${id}`);
    if (accept(job)) return job;
    if (Date.now() > deadline) throw new Error(`job ${id} still ${job.state}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('prefetch', () => {
  it('fills exactly the files matching --include/--exclude, each once; a second prefetch skips them all', async () => {
    const id = 'org/pre-select';
    const files: Record<string, Buffer> = {
      'README.md': Buffer.from('# select\n'),
      'config.json': Buffer.from('{"layers": 2}\n'),
      'tokenizer.json': Buffer.from('{"vocab": []}\n'),
      'model-00001-of-00002.safetensors': makeContent(2 * MiB, 71),
      'model-00002-of-00002.safetensors': makeContent(2 * MiB + 5, 72),
      'onnx/model.onnx': makeContent(1 * MiB, 73),
      'onnx/config.json': Buffer.from('{"onnx": true}\n'),
    };
    hub.addRepo({ id, files });
    const wanted = ['config.json', 'model-00001-of-00002.safetensors', 'onnx/config.json', 'tokenizer.json'];
    await withMirror(async (m) => {
      const args = ['prefetch', id, '--url', m.url, '--include', '*.json', '--include', '*.safetensors', '--exclude', 'model-00002*'];
      const first = await cli(args);
      expect(first.code, first.output.join('\n')).toBe(0);
      for (const f of Object.keys(files)) expect(contentGets(id, f), f).toBe(wanted.includes(f) ? 1 : 0);
      // One line per file (not a TTY), naming each wanted file once.
      for (const f of wanted) expect(first.output.filter((l) => l.startsWith('filled') && l.endsWith(`  ${f}`)), f).toHaveLength(1);
      expect(first.output.some((l) => l.includes('model-00002') || l.includes('README') || l.includes('model.onnx'))).toBe(false);

      const second = await cli(args);
      expect(second.code, second.output.join('\n')).toBe(0);
      for (const f of Object.keys(files)) expect(contentGets(id, f), f).toBe(wanted.includes(f) ? 1 : 0);
      expect(second.output.filter((l) => l.startsWith('cached'))).toHaveLength(wanted.length);

      // The prefetched files are hits for clients, byte for byte.
      for (const f of wanted) {
        const d = await download(`${m.url}/${id}/resolve/main/${f}`);
        expect([d.status, header(d, 'x-mirror-cache'), d.sha256], f).toEqual([200, 'hit', sha256Hex(files[f]!)]);
      }
      for (const f of Object.keys(files)) expect(contentGets(id, f), f).toBe(wanted.includes(f) ? 1 : 0);

      // --json: one document with the job and an item per file.
      const json = await cli([...args, '--json']);
      expect(json.code).toBe(0);
      const doc = JSON.parse(json.output.join('\n')) as { job: { state: string; params: Record<string, unknown> }; items: Array<{ item: string; outcome: string }> };
      expect(doc.job.state).toBe('done');
      expect(doc.items.map((i) => i.item).sort()).toEqual(wanted);
      expect(new Set(doc.items.map((i) => i.outcome))).toEqual(new Set(['cached']));
      expect(doc.job.params).not.toHaveProperty('hubToken');
    });
  });

  it('a gated repo needs a token upstream grants: without one the gated files fail (exit 1), with one they are filled; the token is never stored', async () => {
    const id = 'org/pre-gated';
    const weights = makeContent(3 * MiB, 74);
    hub.addRepo({ id, files: { 'README.md': Buffer.from('# gated\n'), 'w.safetensors': weights }, gated: { allowedTokens: [GRANTED] } });
    await withMirror(async (m) => {
      const anonymous = await cli(['prefetch', id, '--url', m.url]);
      expect(anonymous.code).toBe(1);
      expect(anonymous.output.find((l) => l.startsWith('failed') && l.includes('w.safetensors'))).toMatch(/restricted|GatedRepo|authenticated/i);
      expect(contentGets(id, 'w.safetensors')).toBe(0);

      const other = await cli(['prefetch', id, '--url', m.url, '--token', 'hf_someone_else']);
      expect(other.code).toBe(1);
      expect(contentGets(id, 'w.safetensors')).toBe(0);

      const granted = await cli(['prefetch', id, '--url', m.url], { HF_TOKEN: GRANTED });
      expect(granted.code, granted.output.join('\n')).toBe(0);
      expect(granted.output.some((l) => l.startsWith('filled') && l.endsWith('w.safetensors'))).toBe(true);
      expect(contentGets(id, 'w.safetensors')).toBe(1);

      // Prefetching did not make it readable to anyone upstream would refuse.
      const intruder = await download(`${m.url}/${id}/resolve/main/w.safetensors`);
      expect(intruder.status).toBe(401);
      const owner = await download(`${m.url}/${id}/resolve/main/w.safetensors`, { headers: { authorization: `Bearer ${GRANTED}` } });
      expect([owner.status, header(owner, 'x-mirror-cache'), owner.sha256]).toEqual([200, 'hit', sha256Hex(weights)]);
      await m.close();
      for (const f of fs.readdirSync(m.dataDir, { recursive: true }) as string[]) {
        const p = path.join(m.dataDir, f);
        if (fs.statSync(p).isFile()) expect(fs.readFileSync(p).includes(GRANTED), p).toBe(false);
      }
    });
  });

  it('a prefetch interrupted by kill -9 resumes after the restart and completes; finished files are not fetched again', async () => {
    const id = 'org/pre-resume';
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 4; i++) files[`shard-${i}.safetensors`] = makeContent(4 * MiB + i, 80 + i);
    hub.addRepo({ id, files });
    const dataDir = tempDir();
    const env = { HUBCACHE_ADMIN_TOKEN: ADMIN, ...NO_TAKEOVER_ENV };
    const barrier = hub.setFault({ server: 'cdn', pathIncludes: hub.fileInfo({ id }, 'shard-2.safetensors').sha256 }, { kind: 'barrier', atBytes: MiB, times: 1 });
    let m = await startMirrorProcess(hub.url, dataDir, env);
    let jobId: string;
    try {
      const submitted = await cli(['prefetch', id, '--url', m.url, '--concurrency', '1', '--detach']);
      expect(submitted.code, submitted.output.join('\n')).toBe(0);
      jobId = submitted.output.at(-1) ?? '';
      expect(jobId).toMatch(/^[0-9a-f]{12}$/);
      await barrier.reached;
      await m.kill('SIGKILL');
    } finally {
      barrier.release();
      await m.kill('SIGKILL');
    }
    expect(contentGets(id, 'shard-3.safetensors')).toBe(0);
    m = await startMirrorProcess(hub.url, dataDir, env);
    try {
      const job = await waitForJob(m.url, jobId, (j) => j.state === 'done' || j.state === 'failed');
      expect(job.state).toBe('done');
      expect(job.progress).toMatchObject({ itemsTotal: 4, itemsDone: 4, itemsFailed: 0 });
      expect([0, 1, 2, 3].map((i) => contentGets(id, `shard-${i}.safetensors`))).toEqual([1, 1, 2, 1]);
      const { items } = await adminGet<{ items: Array<{ item: string; outcome: string }> }>(`${m.url}/admin/jobs/${jobId}`);
      expect(items.map((i) => `${i.outcome} ${i.item}`)).toEqual(['filled shard-0.safetensors', 'filled shard-1.safetensors', 'filled shard-2.safetensors', 'filled shard-3.safetensors']);

      const again = await cli(['prefetch', id, '--url', m.url]);
      expect(again.code).toBe(0);
      expect([0, 1, 2, 3].map((i) => contentGets(id, `shard-${i}.safetensors`))).toEqual([1, 1, 2, 1]);
      for (const [name, content] of Object.entries(files)) {
        const d = await download(`${m.url}/${id}/resolve/main/${name}`, { keepBody: false });
        expect([d.status, header(d, 'x-mirror-cache'), d.sha256]).toEqual([200, 'hit', sha256Hex(content)]);
      }
    } finally {
      await m.kill('SIGTERM');
    }
  });
});

describe('jobs', () => {
  it('lists a running prefetch and cancels it: the files after it are never fetched', async () => {
    const id = 'org/pre-cancel';
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 3; i++) files[`part-${i}.bin`] = makeContent(2 * MiB + i, 90 + i);
    hub.addRepo({ id, files });
    const barrier = hub.setFault({ server: 'cdn', pathIncludes: hub.fileInfo({ id }, 'part-0.bin').sha256 }, { kind: 'barrier', atBytes: 1024, times: 1 });
    try {
      await withMirror(async (m) => {
        const submitted = await cli(['prefetch', id, '--url', m.url, '--concurrency', '1', '--detach', '--json']);
        expect(submitted.code).toBe(0);
        const { job } = JSON.parse(submitted.output.join('\n')) as { job: JobJson };
        await barrier.reached;

        const listed = await cli(['jobs', '--url', m.url, '--json']);
        expect(listed.code).toBe(0);
        const { jobs } = JSON.parse(listed.output.join('\n')) as { jobs: JobJson[] };
        expect(jobs.find((j) => j.id === job.id)?.state).toBe('running');
        const human = await cli(['jobs', 'list', '--url', m.url]);
        expect(human.output.some((l) => l.startsWith(job.id) && l.includes('prefetch') && l.includes('running'))).toBe(true);

        const cancelled = await cli(['jobs', 'cancel', job.id, '--url', m.url]);
        expect(cancelled.code, cancelled.output.join('\n')).toBe(0);
        expect(cancelled.output).toContain(`job ${job.id}: running`);
        const ended = await waitForJob(m.url, job.id, (j) => j.state !== 'running');
        expect(ended.state).toBe('cancelled');
        barrier.release();

        const shown = await cli(['jobs', 'show', job.id, '--url', m.url, '--json']);
        expect((JSON.parse(shown.output.join('\n')) as { job: JobJson }).job.state).toBe('cancelled');
        expect(contentGets(id, 'part-1.bin') + contentGets(id, 'part-2.bin')).toBe(0);

        const again = await cli(['jobs', 'cancel', job.id, '--url', m.url]);
        expect(again.code).toBe(1);
        expect(again.output.join('\n')).toMatch(/already finished \(cancelled\)/);
        const missing = await cli(['jobs', 'show', 'ffffffffffff', '--url', m.url]);
        expect(missing.code).toBe(1);
        expect(missing.output.join('\n')).toMatch(/No job ffffffffffff/);
      });
    } finally {
      barrier.remove();
    }
  });

  it('with the server stopped, jobs are listed and cancelled on the data dir itself: a cancelled job does not resume', async () => {
    const id = 'org/pre-offline-cancel';
    const files: Record<string, Buffer> = { 'a.bin': makeContent(2 * MiB, 95), 'b.bin': makeContent(2 * MiB, 96) };
    hub.addRepo({ id, files });
    const dataDir = tempDir();
    const env = { HUBCACHE_ADMIN_TOKEN: ADMIN, ...NO_TAKEOVER_ENV };
    const barrier = hub.setFault({ server: 'cdn', pathIncludes: hub.fileInfo({ id }, 'a.bin').sha256 }, { kind: 'barrier', atBytes: 1024, times: 1 });
    let m = await startMirrorProcess(hub.url, dataDir, env);
    let jobId = '';
    try {
      const submitted = await cli(['prefetch', id, '--url', m.url, '--concurrency', '1', '--detach']);
      jobId = submitted.output.at(-1) ?? '';
      await barrier.reached;
    } finally {
      await m.kill('SIGKILL');
      barrier.release();
    }
    const listed = await cli(['jobs', '--data-dir', dataDir, '--json']);
    expect(listed.code, listed.output.join('\n')).toBe(0);
    expect((JSON.parse(listed.output.join('\n')) as { jobs: JobJson[] }).jobs.map((j) => [j.id, j.state])).toEqual([[jobId, 'running']]);
    const cancelled = await cli(['jobs', 'cancel', jobId, '--data-dir', dataDir]);
    expect(cancelled.code, cancelled.output.join('\n')).toBe(0);
    expect(cancelled.output).toContain(`job ${jobId}: cancelled`);

    m = await startMirrorProcess(hub.url, dataDir, env);
    try {
      const { job } = await adminGet<{ job: JobJson }>(`${m.url}/admin/jobs/${jobId}`);
      expect(job.state).toBe('cancelled');
      expect(contentGets(id, 'a.bin')).toBe(1); // the one cut by the kill
      expect(contentGets(id, 'b.bin')).toBe(0);
    } finally {
      await m.kill('SIGTERM');
    }
  });

  it('usage errors exit 2 before anything is asked', async () => {
    const bad = await cli(['prefetch', 'org/x', '--type', 'modle', '--url', 'http://127.0.0.1:9']);
    expect(bad.code).toBe(2);
    expect(bad.output.join('\n')).toMatch(/"type" must be model, dataset or space/);
    const glob = await cli(['prefetch', 'org/x', '--include', '[abc', '--url', 'http://127.0.0.1:9']);
    expect(glob.code).toBe(2);
    const repo = await cli(['prefetch', '../etc', '--url', 'http://127.0.0.1:9']);
    expect(repo.code).toBe(2);
    const noArg = await cli(['prefetch']);
    expect(noArg.code).toBe(2);
  });
});
