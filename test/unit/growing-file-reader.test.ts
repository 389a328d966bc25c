import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { GrowingFileReader, type GrowingSource } from '../../src/mirror/growing-file-reader.js';
import { waitFor } from '../support/wait-for.js';

/** A hand-driven source: the test appends bytes and decides the limit, commit and failure. */
class ManualSource implements GrowingSource {
  limit = 0;
  failure: Error | undefined;
  settled = false;
  listeners = new Set<() => void>();
  constructor(
    readonly file: string,
    readonly finalFile: string,
  ) {}
  readableLimit() {
    return this.limit;
  }
  paths() {
    return { current: this.file, fallback: this.finalFile };
  }
  onChange(l: () => void) {
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }
  append(data: Buffer) {
    fs.appendFileSync(this.file, data);
    this.limit += data.length;
    this.fire();
  }
  fire() {
    const ls = [...this.listeners];
    this.listeners.clear();
    ls.forEach((l) => l());
  }
}

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hubcache-grow-'));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function collect(reader: GrowingFileReader): { chunks: Buffer[]; done: Promise<Buffer> } {
  const chunks: Buffer[] = [];
  const done = new Promise<Buffer>((resolve, reject) => {
    reader.on('data', (c: Buffer) => chunks.push(c));
    reader.on('end', () => resolve(Buffer.concat(chunks)));
    reader.on('error', reject);
  });
  return { chunks, done };
}


describe('GrowingFileReader', () => {
  it('delivers bytes as soon as they are readable, then ends at the span end', async () => {
    const src = new ManualSource(path.join(dir, 'f.part'), path.join(dir, 'f'));
    fs.writeFileSync(src.file, '');
    const reader = new GrowingFileReader(src, 0, 9);
    const { chunks, done } = collect(reader);
    src.append(Buffer.from('abc'));
    // The first bytes arrive while the rest is still to come.
    await waitFor(() => Buffer.concat(chunks).length === 3, { what: 'the first three bytes' });
    expect(Buffer.concat(chunks).toString()).toBe('abc');
    src.append(Buffer.from('defghij'));
    expect((await done).toString()).toBe('abcdefghij');
  });

  it('reads a middle span without waiting for the rest', async () => {
    const src = new ManualSource(path.join(dir, 'f.part'), path.join(dir, 'f'));
    fs.writeFileSync(src.file, '');
    const { done } = collect(new GrowingFileReader(src, 2, 4));
    src.append(Buffer.from('abcdefg'));
    expect((await done).toString()).toBe('cde');
  });

  it('follows a rename into place that happened before it opened', async () => {
    const src = new ManualSource(path.join(dir, 'f.part'), path.join(dir, 'f'));
    fs.writeFileSync(src.finalFile, 'committed!');
    src.limit = 10;
    const { done } = collect(new GrowingFileReader(src, 0, 9));
    expect((await done).toString()).toBe('committed!');
  });

  it('can be created before the file exists: it opens it once bytes are readable', async () => {
    // A fill just admitted (or waiting for upstream) has no staging file yet; a client whose
    // headers went out meanwhile gets a reader on it.
    const src = new ManualSource(path.join(dir, 'f.part'), path.join(dir, 'f'));
    const reader = new GrowingFileReader(src, 0, 5);
    const { done } = collect(reader);
    await waitFor(() => src.listeners.size === 1, { what: 'the reader to wait for bytes' });
    expect(fs.existsSync(src.file)).toBe(false);
    fs.writeFileSync(src.file, '');
    src.append(Buffer.from('abcdef'));
    expect((await done).toString()).toBe('abcdef');
  });

  it('is destroyed with the source failure, even while waiting', async () => {
    const src = new ManualSource(path.join(dir, 'f.part'), path.join(dir, 'f'));
    fs.writeFileSync(src.file, '');
    const { chunks, done } = collect(new GrowingFileReader(src, 0, 9));
    src.append(Buffer.from('abc'));
    await waitFor(() => Buffer.concat(chunks).length === 3 && src.listeners.size === 1, { what: 'the reader to wait after three bytes' });
    src.failure = new Error('digest mismatch');
    src.fire();
    await expect(done).rejects.toThrow('digest mismatch');
  });

  it('unsubscribes when the consumer destroys it', async () => {
    const src = new ManualSource(path.join(dir, 'f.part'), path.join(dir, 'f'));
    fs.writeFileSync(src.file, '');
    const reader = new GrowingFileReader(src, 0, 9);
    reader.resume();
    await waitFor(() => src.listeners.size === 1, { what: 'the reader to subscribe' });
    reader.destroy();
    await new Promise((resolve) => reader.once('close', resolve));
    expect(src.listeners.size).toBe(0);
  });
});
