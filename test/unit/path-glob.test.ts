/** Prefetch's --include/--exclude: fnmatch semantics, as huggingface_hub's allow/ignore patterns. */
import { describe, expect, it } from 'vitest';
import { globToRegExp, pathSelector } from '../../src/admin/path-glob.js';

const matches = (glob: string, path: string) => globToRegExp(glob).test(path);

describe('globToRegExp', () => {
  it('* crosses directories, ? is one character, sets and negated sets', () => {
    expect(matches('*.safetensors', 'model.safetensors')).toBe(true);
    expect(matches('*.safetensors', 'sub/dir/model.safetensors')).toBe(true);
    expect(matches('*.safetensors', 'model.safetensors.index.json')).toBe(false);
    expect(matches('model-0000?-of-00002.bin', 'model-00001-of-00002.bin')).toBe(true);
    expect(matches('model-0000?-of-00002.bin', 'model-000011-of-00002.bin')).toBe(false);
    expect(matches('[ab]*.txt', 'a1.txt')).toBe(true);
    expect(matches('[ab]*.txt', 'c1.txt')).toBe(false);
    expect(matches('[!ab]*.txt', 'c1.txt')).toBe(true);
    expect(matches('shard-[0-3].bin', 'shard-2.bin')).toBe(true);
    expect(matches('shard-[0-3].bin', 'shard-7.bin')).toBe(false);
    expect(matches('[]]x', ']x')).toBe(true);
  });

  it('regular-expression characters are literal; a trailing / means everything below', () => {
    expect(matches('a+b(c).json', 'a+b(c).json')).toBe(true);
    expect(matches('a.json', 'abjson')).toBe(false);
    expect(matches('$x^', '$x^')).toBe(true);
    expect(matches('onnx/', 'onnx/model.onnx')).toBe(true);
    expect(matches('onnx/', 'onnx/sub/model.onnx')).toBe(true);
    expect(matches('onnx/', 'other/onnx/model.onnx')).toBe(false);
    expect(matches('config.json', 'sub/config.json')).toBe(false);
  });

  it('a set that is never closed is refused', () => {
    expect(() => globToRegExp('[abc')).toThrow(/"\[" without its "\]"/);
  });
});

describe('pathSelector', () => {
  it('includes (none: all) minus excludes', () => {
    const all = pathSelector([], []);
    expect(all('anything/at/all')).toBe(true);
    const some = pathSelector(['*.json', '*.safetensors'], ['*00002*', 'onnx/']);
    expect(['config.json', 'model-00001.safetensors', 'model-00002.safetensors', 'onnx/config.json', 'README.md'].filter(some)).toEqual(['config.json', 'model-00001.safetensors']);
    const onlyExclude = pathSelector([], ['*.bin']);
    expect(['a.bin', 'a.txt'].filter(onlyExclude)).toEqual(['a.txt']);
  });
});
