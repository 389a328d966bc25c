/**
 * What /proc says about a process (Linux): CPU seconds (all threads), resident memory, children.
 * The bench reads the mirror and nginx the same way, from outside, so neither does extra work to
 * be measured. Missing /proc (another OS, a process gone) gives null, never a made-up figure.
 */
import fs from 'node:fs';

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ: 100 on every Linux the bench runs on). */
const USER_HZ = 100;

/** user + system CPU seconds of one process (all its threads), or null. */
export function cpuSeconds(pid: number): { user: number; system: number } | null {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'latin1');
    // Fields after the parenthesised command name (which may contain spaces).
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    return { user: Number(rest[11]) / USER_HZ, system: Number(rest[12]) / USER_HZ };
  } catch {
    return null;
  }
}

/** Sum of cpuSeconds over several processes (null if any is unreadable). */
export function cpuSecondsOf(pids: number[]): { user: number; system: number } | null {
  let user = 0;
  let system = 0;
  for (const pid of pids) {
    const c = cpuSeconds(pid);
    if (!c) return null;
    user += c.user;
    system += c.system;
  }
  return { user, system };
}

/** VmRSS in bytes, or null. */
export function rssBytes(pid: number): number | null {
  try {
    const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'latin1'));
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

/** Direct children of `pid` (e.g. nginx's workers), found by their parent pid. */
export function childPids(pid: number): number[] {
  const out: number[] = [];
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return out;
  }
  for (const e of entries) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'latin1');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(e));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Samples the RSS of `pid` every `everyMs` until stopped; reports the peak and the samples' count. */
export function sampleRss(pid: number, everyMs = 100): { stop(): { peakBytes: number | null; samples: number } } {
  let peak: number | null = null;
  let samples = 0;
  const take = (): void => {
    const r = rssBytes(pid);
    if (r !== null) {
      samples++;
      peak = peak === null ? r : Math.max(peak, r);
    }
  };
  take();
  const timer = setInterval(take, everyMs);
  return {
    stop: () => {
      clearInterval(timer);
      take();
      return { peakBytes: peak, samples };
    },
  };
}
