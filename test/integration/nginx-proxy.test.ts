/**
 * The production recipe: Debian nginx terminating TLS in front of the mirror, with the config the
 * README ships (config/nginx-hubcache.conf, only its ports and paths substituted) and the mirror's
 * publicUrl set to nginx's https URL. Through it: a multi-MB download with the exact bytes and
 * the mirror's headers, streamed (nothing spooled to nginx's temp files); ranges; curl resuming a
 * partial file; a paginated tree listing whose Link URLs name the public https URL and work.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { listFiles } from '@huggingface/hub';
import { Agent, fetch as undiciFetch } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContent, sha256Hex } from '../support/content.js';
import { download, header } from '../support/download.js';
import { startFakeHub, type FakeHub, type RepoRef } from '../support/fake-hub.js';
import { freePort } from '../support/free-port.js';
import { runTool } from '../support/run-tool.js';
import { startMirror, type TestMirror } from '../support/start-mirror.js';
import { waitFor, within } from '../support/wait-for.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const RECIPE = path.join(ROOT, 'config/nginx-hubcache.conf');
const NGINX = '/usr/sbin/nginx';
// `.ci/run` installs nginx: in CI a missing one fails instead of skipping.
const haveNginx = Boolean(process.env.CI) || fs.existsSync(NGINX);
if (!haveNginx) process.stderr.write(`nginx-proxy tests skipped: no ${NGINX} (Debian: apt-get install nginx). They run in CI.\n`);

const REPO: RepoRef = { id: 'org/behind-nginx' };
const files: Record<string, Buffer> = {
  'config.json': Buffer.from('{"proxied": true}\n'),
  'model.safetensors': makeContent(24 * 1024 * 1024 + 123, 1201),
  'ranged.bin': makeContent(3 * 1024 * 1024 + 7, 1202),
  'cold.bin': makeContent(2 * 1024 * 1024, 1203),
  'resumed.bin': makeContent(5 * 1024 * 1024 + 1, 1204),
  'sub/a.txt': Buffer.from('a\n'),
  'sub/b.txt': Buffer.from('b\n'),
};

let hub: FakeHub;
let mirror: TestMirror;
let proxy: { url: string; dir: string; stop(): Promise<void> };
let tmp: string;
let dispatcher: Agent;
let certFile: string;

/** The shipped recipe with this test's ports and paths; each substituted text must be there exactly once. */
function recipeFor(listenPort: number, mirrorPort: number, dir: string): string {
  let text = fs.readFileSync(RECIPE, 'utf8');
  const substitutions: Array<[string, string]> = [
    ['listen 443 ssl;', `listen 127.0.0.1:${listenPort} ssl;`],
    ['server 127.0.0.1:8080;', `server 127.0.0.1:${mirrorPort};`],
    ['/etc/ssl/hubcache/fullchain.pem', path.join(dir, 'cert.pem')],
    ['/etc/ssl/hubcache/privkey.pem', path.join(dir, 'key.pem')],
  ];
  for (const [from, to] of substitutions) {
    const parts = text.split(from);
    if (parts.length !== 2) throw new Error(`${RECIPE}: expected ${JSON.stringify(from)} exactly once, found ${parts.length - 1}`);
    text = parts.join(to);
  }
  return text;
}

/** nginx in the foreground with its own prefix, pid, logs and temp dirs; the recipe included at http level. */
function mainConfig(dir: string): string {
  return [
    ...(process.getuid?.() === 0 ? ['user root;'] : []),
    'daemon off;',
    'worker_processes 1;',
    `pid ${dir}/nginx.pid;`,
    `error_log ${dir}/error.log info;`,
    'events { worker_connections 256; }',
    'http {',
    `  access_log ${dir}/access.log;`,
    `  client_body_temp_path ${dir}/client_body;`,
    `  proxy_temp_path ${dir}/proxy_temp;`,
    `  fastcgi_temp_path ${dir}/fastcgi;`,
    `  uwsgi_temp_path ${dir}/uwsgi;`,
    `  scgi_temp_path ${dir}/scgi;`,
    `  include ${dir}/hubcache.conf;`,
    '}',
    '',
  ].join('\n');
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** Starts nginx on `port`; 'in use' when another process took the port first. */
async function startNginx(dir: string, port: number, mirrorPort: number): Promise<{ stop(): Promise<void> } | 'in use'> {
  for (const sub of ['client_body', 'proxy_temp', 'fastcgi', 'uwsgi', 'scgi']) fs.mkdirSync(path.join(dir, sub), { recursive: true });
  fs.writeFileSync(path.join(dir, 'hubcache.conf'), recipeFor(port, mirrorPort, dir));
  fs.writeFileSync(path.join(dir, 'nginx.conf'), mainConfig(dir));
  const errorLog = path.join(dir, 'error.log');
  fs.rmSync(errorLog, { force: true });
  const child: ChildProcess = spawn(NGINX, ['-p', dir, '-c', path.join(dir, 'nginx.conf'), '-e', errorLog], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const dead = () => child.exitCode !== null || child.signalCode !== null;
  const stop = async () => {
    if (!dead()) child.kill('SIGTERM');
    await within(exited, { what: 'nginx to exit' });
  };
  try {
    await waitFor(async () => dead() || (await canConnect(port)), { what: `nginx to listen on ${port}` });
  } catch (err) {
    child.kill('SIGKILL');
    await exited;
    throw err;
  }
  if (dead()) {
    const log = `${stderr}\n${fs.existsSync(errorLog) ? fs.readFileSync(errorLog, 'utf8') : ''}`;
    if (log.includes('Address already in use')) return 'in use';
    throw new Error(`nginx exited at start:\n${log}`);
  }
  return { stop };
}

/** Every file under `dir` (nginx's temp dirs: what it spooled to disk). */
function filesUnder(dir: string): string[] {
  return fs.readdirSync(dir, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
}

beforeAll(async () => {
  if (!haveNginx) return;
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-nginx-'));
  const dir = path.join(tmp, 'nginx');
  fs.mkdirSync(dir);
  // A self-signed certificate for 127.0.0.1; clients trust it as their CA.
  const cert = await runTool('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem')]);
  if (cert.code !== 0) throw new Error(`openssl: ${cert.stderr}`);
  certFile = path.join(dir, 'cert.pem');
  dispatcher = new Agent({ connect: { ca: fs.readFileSync(certFile) } });

  hub = await startFakeHub({ treePageSize: 2 });
  hub.addRepo({ ...REPO, files, xet: false });
  // nginx cannot listen on port 0, and the mirror's publicUrl must name nginx's port before it
  // starts: pick a free port, and start both again with another one if it was taken meanwhile.
  for (let attempt = 0; attempt < 5 && !proxy; attempt++) {
    const port = await freePort();
    const url = `https://127.0.0.1:${port}`;
    mirror = await startMirror(hub.url, { publicUrl: url });
    const started = await startNginx(dir, port, Number(new URL(mirror.url).port));
    if (started === 'in use') {
      await mirror.destroy();
      continue;
    }
    proxy = { url, dir, stop: started.stop };
  }
  if (!proxy) throw new Error('nginx found no free port in 5 attempts');
});

afterAll(async () => {
  await proxy?.stop();
  await mirror?.destroy();
  await hub?.stop();
  await dispatcher?.close();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

const fileUrl = (name: string) => `${proxy.url}/${REPO.id}/resolve/main/${name}`;

describe.skipIf(!haveNginx)(`behind nginx with TLS (${path.relative(ROOT, RECIPE)})`, () => {
  it('a 24 MiB download over https: the exact bytes and the mirror headers, a miss then a hit, streamed (nothing spooled by nginx)', async () => {
    const body = files['model.safetensors']!;
    const head = await download(fileUrl('model.safetensors'), { method: 'HEAD', dispatcher });
    expect(head.status).toBe(200);
    expect(header(head, 'content-length')).toBe(String(body.length));
    expect(header(head, 'x-linked-size')).toBe(String(body.length));
    expect(header(head, 'etag')).toBe(`"${sha256Hex(body)}"`);
    expect(header(head, 'x-repo-commit')).toMatch(/^[0-9a-f]{40}$/);

    const first = await download(fileUrl('model.safetensors'), { dispatcher });
    expect(first.status).toBe(200);
    expect(first.complete).toBe(true);
    expect(first.sha256).toBe(sha256Hex(body));
    expect(header(first, 'x-mirror-cache')).toBe('miss');
    const second = await download(fileUrl('model.safetensors'), { dispatcher });
    expect(second.sha256).toBe(sha256Hex(body));
    expect(header(second, 'x-mirror-cache')).toBe('hit');
    expect(header(second, 'content-length')).toBe(String(body.length));
    // The bytes crossed the WAN once.
    expect(hub.count({ server: 'cdn', method: 'GET', pathIncludes: sha256Hex(body) })).toBe(1);
    expect(filesUnder(path.join(proxy.dir, 'proxy_temp'))).toEqual([]);
  });

  it('ranges pass through: single, suffix and multiple ranges of a cached file, a small range of a cold one', async () => {
    const body = files['ranged.bin']!;
    const warm = await download(fileUrl('ranged.bin'), { dispatcher });
    expect(warm.sha256).toBe(sha256Hex(body));

    const one = await download(fileUrl('ranged.bin'), { dispatcher, headers: { range: 'bytes=1000000-2000499' } });
    expect(one.status).toBe(206);
    expect(header(one, 'content-range')).toBe(`bytes 1000000-2000499/${body.length}`);
    expect(one.body.equals(body.subarray(1_000_000, 2_000_500))).toBe(true);
    expect(header(one, 'x-mirror-cache')).toBe('hit');

    const suffix = await download(fileUrl('ranged.bin'), { dispatcher, headers: { range: 'bytes=-4096' } });
    expect(suffix.status).toBe(206);
    expect(suffix.body.equals(body.subarray(body.length - 4096))).toBe(true);

    const multi = await download(fileUrl('ranged.bin'), { dispatcher, headers: { range: 'bytes=0-9,100-109' } });
    expect(multi.status).toBe(206);
    expect(header(multi, 'content-type')).toMatch(/^multipart\/byteranges; boundary=/);
    const text = multi.body.toString('latin1');
    expect(text).toContain(body.subarray(0, 10).toString('latin1'));
    expect(text).toContain(body.subarray(100, 110).toString('latin1'));
    expect(header(multi, 'content-length')).toBe(String(multi.body.length));

    const cold = await download(fileUrl('cold.bin'), { dispatcher, headers: { range: 'bytes=0-65535' } });
    expect(cold.status).toBe(206);
    expect(cold.body.equals(files['cold.bin']!.subarray(0, 65_536))).toBe(true);
    expect(header(cold, 'x-mirror-cache')).toBe('bypass');
  });

  it('curl over https resumes a partial file (-C -): the whole file, sha256 right', async () => {
    const body = files['resumed.bin']!;
    const out = path.join(tmp, 'resumed.bin');
    fs.writeFileSync(out, body.subarray(0, 1_234_567));
    const r = await runTool('curl', ['-sS', '--fail', '--cacert', certFile, '-L', '-C', '-', '-o', out, fileUrl('resumed.bin')]);
    expect(r.code, r.stderr).toBe(0);
    expect(sha256Hex(fs.readFileSync(out))).toBe(sha256Hex(body));
  });

  it('a paginated tree listing: every Link names the public https URL, and following them through nginx lists every file', async () => {
    const expected = Object.keys(files).sort();
    const paths: string[] = [];
    const links: string[] = [];
    let next: string | undefined = `${proxy.url}/api/models/${REPO.id}/tree/main?recursive=true`;
    while (next) {
      const page = await download(next, { dispatcher });
      expect(page.status, next).toBe(200);
      for (const e of JSON.parse(page.body.toString('utf8')) as Array<{ type: string; path: string }>) if (e.type === 'file') paths.push(e.path);
      const link = header(page, 'link');
      next = link ? /^<([^>]+)>; rel="next"$/.exec(link)?.[1] : undefined;
      if (link) {
        expect(next, link).toBeDefined();
        links.push(next!);
      }
    }
    expect(paths.sort()).toEqual(expected);
    // Two entries a page upstream (directories count): several pages, each Link on nginx's URL.
    expect(links.length).toBeGreaterThanOrEqual(3);
    for (const l of links) expect(l.startsWith(`${proxy.url}/api/models/${REPO.id}/tree/`), l).toBe(true);

    // The JS client, pointed at the public URL, pages through the same listing.
    const viaClient: string[] = [];
    const fetchViaNginx = ((input: string | URL | Request, init?: RequestInit) => undiciFetch(input as string, { ...(init as object), dispatcher })) as unknown as typeof fetch;
    for await (const e of listFiles({ repo: REPO.id, recursive: true, hubUrl: proxy.url, fetch: fetchViaNginx })) if (e.type === 'file') viaClient.push(e.path);
    expect(viaClient.sort()).toEqual(expected);
  });
});
