/**
 * A download by `curl` in its own process, hashed by `openssl dgst` (SHA-NI; coreutils sha256sum is 5x slower here): for timing tests, so that the
 * client's work (HTTP parsing, hashing) does not share the mirror's event loop the way an
 * in-process client would. Always asynchronous: a synchronous spawn would block the mirror that
 * runs in the test process.
 */
import { spawn } from 'node:child_process';

export interface ExternalDownload {
  sha256: string;
  ms: number;
  exitCode: number | null;
  stderr: string;
}

export function curlSha256(url: string): Promise<ExternalDownload> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-c', 'set -o pipefail; curl -sS -f "$0" | openssl dgst -sha256 -r', url], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ sha256: out.split(/\s/)[0] ?? '', ms: performance.now() - t0, exitCode: code, stderr: err }));
  });
}

/**
 * `curl` writing the body to `file` (use a tmpfs such as /dev/shm for big files): measures the
 * transfer alone; hash the file afterwards, outside the timed window.
 */
export function curlToFile(url: string, file: string): Promise<ExternalDownload> {
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn('curl', ['-sS', '-f', '-o', file, url], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ sha256: '', ms: performance.now() - t0, exitCode: code, stderr: err }));
  });
}
