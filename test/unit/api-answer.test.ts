import { describe, expect, it } from 'vitest';
import { isXetLink, linkRels, nextPage, parseLinkHeader, renderLinks, stripXetFromBody, stripXetHash, toApiAnswer } from '../../src/hub/api-answer.js';
import { isPlainHost, publicOrigin } from '../../src/http/public-origin.js';

const UPSTREAM = 'https://hub.example';
const toUpstreamPath = (u: string) => {
  const url = new URL(u, `${UPSTREAM}/api/x`);
  return url.origin === UPSTREAM ? url.pathname + url.search : undefined;
};

describe('xetHash stripping', () => {
  it('removes xetHash at any depth and keeps everything else, including lfs', () => {
    const entries = [
      { type: 'file', oid: 'a', size: 3, lfs: { oid: 'sha', size: 3, pointerSize: 130 }, xetHash: 'f'.repeat(64), path: 'm.bin' },
      { type: 'directory', oid: 'b', size: 0, path: 'sub' },
    ];
    const r = stripXetHash(entries);
    expect(r.changed).toBe(true);
    expect(r.value).toEqual([{ type: 'file', oid: 'a', size: 3, lfs: { oid: 'sha', size: 3, pointerSize: 130 }, path: 'm.bin' }, entries[1]]);
    expect(stripXetHash({ siblings: [{ rfilename: 'x', xetHash: 'y' }] }).value).toEqual({ siblings: [{ rfilename: 'x' }] });
    const untouched = { a: [1, { b: null }] };
    expect(stripXetHash(untouched)).toEqual({ value: untouched, changed: false });
  });

  it('leaves bodies without xetHash, or not JSON, byte for byte', () => {
    const pretty = Buffer.from('[ {"path": "a"} ]');
    expect(stripXetFromBody(pretty)).toBe(pretty);
    const notJson = Buffer.from('xetHash but not json');
    expect(stripXetFromBody(notJson)).toBe(notJson);
    expect(stripXetFromBody(Buffer.from('[{"path":"a","xetHash":"h"}]')).toString()).toBe('[{"path":"a"}]');
  });
});

describe('Link headers', () => {
  it('parses entries and relations', () => {
    const v = '<https://hub.example/api/models/m/xet-read-token/c>; rel="xet-auth", <https://cas.example/v1/reconstructions/h>; rel="xet-reconstruction-info"';
    const links = parseLinkHeader(v);
    expect(links.map((l) => l.url)).toEqual(['https://hub.example/api/models/m/xet-read-token/c', 'https://cas.example/v1/reconstructions/h']);
    expect(links.every((l) => isXetLink(l.params))).toBe(true);
    expect(linkRels(['rel=next'])).toEqual(['next']);
    expect(linkRels(['title="x"', 'rel="next prev"'])).toEqual(['next', 'prev']);
    expect(parseLinkHeader('<https://h/a?x=1,2>;rel="next"')).toEqual([{ url: 'https://h/a?x=1,2', params: ['rel="next"'] }]);
  });

  it('rebases upstream pages on the mirror with one space after `;`, as @huggingface/hub parses them', () => {
    const answer = toApiAnswer(
      {
        statusCode: 200,
        headers: { link: `<${UPSTREAM}/api/models/o/n/tree/main?recursive=true&cursor=abc>;rel="next"`, 'content-type': 'application/json' },
        body: Buffer.from('[]'),
      },
      toUpstreamPath,
      { repoScoped: true },
    );
    expect(nextPage(answer.links)).toBe('/api/models/o/n/tree/main?recursive=true&cursor=abc');
    const rendered = renderLinks(answer.links, 'http://mirror:8080')!;
    expect(rendered).toBe('<http://mirror:8080/api/models/o/n/tree/main?recursive=true&cursor=abc>; rel="next"');
    const js = [...rendered.matchAll(/<(https?:[/][/][^>]+)>;\s+rel="([^"]+)"/g)].map(([, url, rel]) => [rel, url]);
    expect(js).toEqual([['next', 'http://mirror:8080/api/models/o/n/tree/main?recursive=true&cursor=abc']]);
  });
});

describe('toApiAnswer hygiene', () => {
  it('drops Xet headers and relations, hop-by-hop and framing headers, cookies and upstream ids', () => {
    const a = toApiAnswer(
      {
        statusCode: 200,
        headers: {
          'content-type': 'application/json',
          'content-length': '99',
          'content-encoding': 'gzip',
          connection: 'keep-alive, x-custom-hop',
          'x-custom-hop': '1',
          'keep-alive': 'timeout=5',
          'transfer-encoding': 'chunked',
          'set-cookie': ['a=b'],
          'x-request-id': 'up',
          'x-xet-hash': 'h',
          'x-xet-refresh-route': '/r',
          'x-total-count': '7',
          'access-control-expose-headers': 'X-Repo-Commit,X-Xet-Hash,Link',
          link: `<${UPSTREAM}/api/m/xet-read-token/c>; rel="xet-auth", <${UPSTREAM}/api/models/o/n/commits/main?p=1>; rel="next"`,
        },
        body: Buffer.from('[{"xetHash":"x","path":"a"}]'),
      },
      toUpstreamPath,
      { repoScoped: true },
    );
    expect(a.headers).toEqual({ 'content-type': 'application/json', 'x-total-count': '7', 'access-control-expose-headers': 'X-Repo-Commit,Link' });
    expect(a.links).toEqual([{ url: { upstreamPath: '/api/models/o/n/commits/main?p=1' }, params: ['rel="next"'] }]);
    expect(a.body.toString()).toBe('[{"path":"a"}]');
  });

  it('names RepoNotFound on a bare 401 for a repo URL (http:// mirrors), not on a credentials error', () => {
    const bare = toApiAnswer({ statusCode: 401, headers: { 'x-error-message': 'Invalid username or password.' }, body: Buffer.from('{}') }, toUpstreamPath, { repoScoped: true });
    expect(bare.headers['x-error-code']).toBe('RepoNotFound');
    const creds = toApiAnswer({ statusCode: 401, headers: { 'x-error-message': 'Invalid credentials in Authorization header' }, body: Buffer.from('{}') }, toUpstreamPath, { repoScoped: true });
    expect(creds.headers['x-error-code']).toBeUndefined();
    const whoami = toApiAnswer({ statusCode: 401, headers: {}, body: Buffer.from('{}') }, toUpstreamPath, { repoScoped: false });
    expect(whoami.headers['x-error-code']).toBeUndefined();
  });

  it('rebases a Location on upstream (absolute or relative), keeps others', () => {
    const rel = toApiAnswer({ statusCode: 307, headers: { location: '/api/models/new/name' }, body: Buffer.alloc(0) }, toUpstreamPath, { repoScoped: true });
    expect(rel.location).toEqual({ upstreamPath: '/api/models/new/name' });
    const ext = toApiAnswer({ statusCode: 302, headers: { location: 'https://cdn.example/x' }, body: Buffer.alloc(0) }, toUpstreamPath, { repoScoped: true });
    expect(ext.location).toEqual({ absolute: 'https://cdn.example/x' });
  });
});

describe("the mirror's public origin", () => {
  it('prefers publicUrl, then a plain Host header, then the listen address', () => {
    expect(publicOrigin('https://m.example/hf/', 'evil.example', 'http://127.0.0.1:1')).toBe('https://m.example/hf');
    expect(publicOrigin('', 'Mirror.Internal:8080', 'http://127.0.0.1:1')).toBe('http://mirror.internal:8080');
    expect(publicOrigin('', '[::1]:8080', 'http://127.0.0.1:1')).toBe('http://[::1]:8080');
    expect(publicOrigin('', undefined, 'http://127.0.0.1:1')).toBe('http://127.0.0.1:1');
    for (const bad of ['evil.example/x', 'a@b', 'x y', 'h:99999', 'h:0', '-h', 'a..b', 'h:', 'javascript:alert(1)', `${'a'.repeat(64)}.example`]) {
      expect(isPlainHost(bad), bad).toBe(false);
      expect(publicOrigin('', bad, 'http://127.0.0.1:1')).toBe('http://127.0.0.1:1');
    }
  });
});
