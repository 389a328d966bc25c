import os from 'node:os';
import { describe, expect, it } from 'vitest';
import { assertLocalFilesystem, networkFilesystemName } from '../../src/storage/filesystem-check.js';

describe('filesystem check', () => {
  it('recognises network filesystems by their statfs magic, including values Node reports as negative', () => {
    expect(networkFilesystemName(0x6969)).toBe('NFS');
    expect(networkFilesystemName(0xff534d42 | 0)).toBe('CIFS'); // a signed 32-bit reading of the magic
    expect(networkFilesystemName(0xfe534d42)).toBe('SMB2');
    expect(networkFilesystemName(0x0bd00bd0)).toBe('Lustre');
    expect(networkFilesystemName(0xef53)).toBeUndefined(); // ext4
    expect(networkFilesystemName(0x01021994)).toBeUndefined(); // tmpfs
    expect(networkFilesystemName(0x58465342)).toBeUndefined(); // xfs
  });

  it('accepts the local temp directory', async () => {
    await expect(assertLocalFilesystem(os.tmpdir())).resolves.toBeUndefined();
  });
});
