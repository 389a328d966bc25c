/** Upstream answers → the errors clients get: the Hub's status and code survive, also through another mirror. */
import { describe, expect, it } from 'vitest';
import { fromUpstreamStatus } from '../../src/upstream/upstream-errors.js';

const asClient = (status: number, headers: Record<string, string>) => {
  const e = fromUpstreamStatus(status, headers, 'org/x');
  return { code: e.code, status: e.status };
};

describe('fromUpstreamStatus', () => {
  it("keeps the Hub's anonymous 401 for a missing or private repo a 401, with or without RepoNotFound named", () => {
    // The Hub itself: a bare 401.
    expect(asClient(401, { 'x-error-message': 'Invalid username or password.' })).toEqual({ code: 'RepoUnauthenticated', status: 401 });
    // Another hubcache upstream (an edge's core) relays it with the code added: still a 401.
    expect(asClient(401, { 'x-error-code': 'RepoNotFound', 'x-error-message': 'Invalid username or password.' })).toEqual({ code: 'RepoUnauthenticated', status: 401 });
    // With a token: the Hub's 404 RepoNotFound, and a bare 404.
    expect(asClient(404, { 'x-error-code': 'RepoNotFound' })).toEqual({ code: 'RepoNotFound', status: 404 });
    expect(asClient(404, {})).toEqual({ code: 'RepoNotFound', status: 404 });
  });

  it('keeps the gated and missing-entry answers as the Hub gave them', () => {
    expect(asClient(401, { 'x-error-code': 'GatedRepo' })).toEqual({ code: 'GatedRepoUnauthenticated', status: 401 });
    expect(asClient(403, { 'x-error-code': 'GatedRepo' })).toEqual({ code: 'GatedRepoForbidden', status: 403 });
    expect(asClient(404, { 'x-error-code': 'EntryNotFound' })).toEqual({ code: 'EntryNotFound', status: 404 });
    expect(asClient(404, { 'x-error-code': 'RevisionNotFound' })).toEqual({ code: 'RevisionNotFound', status: 404 });
  });
});
