/**
 * Reads a V8 .cpuprofile (what `node --cpu-prof` and the inspector's Profiler.stop write) and
 * sums the time spent in each frame: self time (samples whose top frame it is) and total time
 * (samples with the frame anywhere on the stack, counted once per sample).
 */
import path from 'node:path';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface FrameTime {
  frame: string;
  selfMs: number;
  totalMs: number;
}

export interface ProfileSummary {
  wallMs: number;
  /** Wall minus (idle). */
  busyMs: number;
  frames: FrameTime[];
}

const META = new Set(['(idle)', '(program)', '(garbage collector)', '(root)']);

function label(cf: CallFrame, root: string): string {
  const name = cf.functionName || '(anonymous)';
  if (META.has(name) || !cf.url) return name;
  let url = cf.url.replace(/^file:\/\//, '');
  if (url.startsWith(root)) url = path.relative(root, url);
  return `${name} ${url}:${cf.lineNumber + 1}`;
}

export function summarizeProfile(p: CpuProfile, root = process.cwd()): ProfileSummary {
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const n of p.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  // Each sample lasts until the next one (the last until endTime), as DevTools counts it.
  const times: number[] = [];
  let t = p.startTime;
  for (const d of p.timeDeltas) times.push((t += d));
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let idle = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const ms = ((i + 1 < times.length ? times[i + 1]! : p.endTime) - times[i]!) / 1000;
    if (ms <= 0) continue;
    const node = byId.get(p.samples[i]!);
    if (!node) continue;
    const top = label(node.callFrame, root);
    if (top === '(idle)') {
      idle += ms;
      continue;
    }
    self.set(top, (self.get(top) ?? 0) + ms);
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const l = label(byId.get(id)!.callFrame, root);
      if (l === '(root)' || seen.has(l)) continue;
      seen.add(l);
      total.set(l, (total.get(l) ?? 0) + ms);
    }
  }
  const wallMs = (p.endTime - p.startTime) / 1000;
  const frames = [...total.keys()].map((frame) => ({ frame, selfMs: self.get(frame) ?? 0, totalMs: total.get(frame) ?? 0 }));
  return { wallMs, busyMs: wallMs - idle, frames };
}
