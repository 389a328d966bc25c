import { describe, expect, it } from 'vitest';
import { MirrorError } from '../../src/errors.js';
import { RepoPolicy, parseRepoGlob } from '../../src/hub/repo-policy.js';

describe('parseRepoGlob', () => {
  it('matches * within a segment, ** across segments and ? one character', () => {
    const m = (glob: string, name: string) => parseRepoGlob(glob).test(name);
    expect(m('models/org/*', 'models/org/bert')).toBe(true);
    expect(m('models/org/*', 'models/other/bert')).toBe(false);
    expect(m('models/*', 'models/gpt2')).toBe(true);
    expect(m('models/*', 'models/org/bert')).toBe(false);
    expect(m('datasets/**', 'datasets/org/x')).toBe(true);
    expect(m('**', 'spaces/org/app')).toBe(true);
    expect(m('*/org/*', 'datasets/org/x')).toBe(true);
    expect(m('models/org/b?rt', 'models/org/bert')).toBe(true);
    expect(m('models/org/b.rt', 'models/org/bert')).toBe(false);
  });

  it('refuses globs that could never match a repo, saying why', () => {
    const why = (glob: string) => {
      try {
        parseRepoGlob(glob);
        return undefined;
      } catch (err) {
        return (err as Error).message;
      }
    };
    expect(why('meta-llama/*')).toMatch(/must start with models\/, datasets\/ or spaces\/.*e\.g\. models\/meta-llama\/\*/);
    expect(why('space/org/app')).toMatch(/e\.g\. spaces\/org\/app/);
    expect(why('models')).toMatch(/<type>\/<name> or <type>\/<org>\/<name>/);
    expect(why('models/a/b/c')).toMatch(/4 segment/);
    expect(why('models//a')).toMatch(/empty path segment/);
    expect(why('models/a/')).toMatch(/empty path segment/);
    expect(why('models/***')).toMatch(/ambiguous/);
    for (const glob of ['models/{a,b}', 'models/[ab]*', '!models/x', 'models/a b', '']) expect(why(glob), glob).toMatch(/only letters, digits/);
  });

  it('is what RepoPolicy applies: deny wins over allow', () => {
    const policy = new RepoPolicy(['models/org/*'], ['models/org/secret-*']);
    expect(policy.allows({ type: 'model', id: 'org/open' })).toBe(true);
    expect(policy.allows({ type: 'model', id: 'org/secret-1' })).toBe(false);
    expect(policy.allows({ type: 'dataset', id: 'org/open' })).toBe(false);
    expect(() => policy.check({ type: 'model', id: 'org/secret-1' })).toThrow(MirrorError);
    expect(() => new RepoPolicy(['org/name'], [])).toThrow(/must start with/);
  });
});
