/**
 * File selection for prefetch: `--include` / `--exclude` globs over repo paths, with the meaning
 * huggingface_hub gives `allow_patterns` / `ignore_patterns` (Python's fnmatch), so operators can
 * reuse the patterns they already pass to `snapshot_download`:
 * - `*` matches any run of characters, `/` included (`*.safetensors` matches `a/b.safetensors`);
 * - `?` one character; `[abc]`, `[a-z]` one of a set; `[!abc]` one outside it;
 * - a pattern ending in `/` means everything below that directory (`onnx/` is `onnx/*`).
 * A path is selected when it matches an include (or there is none) and no exclude. Pure.
 */

/** A glob → a RegExp over whole paths. Throws an Error for a set that is never closed. */
export function globToRegExp(glob: string): RegExp {
  const pattern = glob.endsWith('/') ? `${glob}*` : glob;
  let out = '';
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i] as string;
    if (ch === '*') out += '[\\s\\S]*';
    else if (ch === '?') out += '[\\s\\S]';
    else if (ch === '[') {
      const close = pattern.indexOf(']', pattern[i + 1] === '!' ? i + 3 : i + 2);
      if (close === -1) throw new Error(`${JSON.stringify(glob)}: "[" without its "]"`);
      let set = pattern.slice(i + 1, close);
      const negated = set.startsWith('!');
      if (negated) set = set.slice(1);
      out += `[${negated ? '^' : ''}${set.replace(/[\\\]^]/g, (c) => `\\${c}`)}]`;
      i = close;
    } else out += ch.replace(/[.+^${}()|\\]/g, (c) => `\\${c}`);
  }
  return new RegExp(`^${out}$`);
}

/** A predicate over repo paths: included (or no includes) and not excluded. */
export function pathSelector(include: readonly string[], exclude: readonly string[]): (path: string) => boolean {
  const inc = include.map(globToRegExp);
  const exc = exclude.map(globToRegExp);
  return (path) => (inc.length === 0 || inc.some((r) => r.test(path))) && !exc.some((r) => r.test(path));
}
