/**
 * The bench's rows: per-round values of the mirror and of its reference, the ratio
 * mirror ÷ reference per round (rounds are interleaved, so each round's pair ran under the same
 * conditions), medians with min–max, which direction is better, and the row's goal with pass/miss.
 * Goals are information: the bench never fails on speed, only on correctness.
 */
import { fmt, summary, type Summary } from './stats.js';

export type Better = 'higher' | 'lower';

/** `on`: the median ratio, or the median of the mirror's own value. */
export interface Goal {
  on: 'ratio' | 'mirror';
  op: '>=' | '<=' | '<';
  value: number;
}

export interface Row {
  phase: string;
  label: string;
  unit: string;
  better: Better;
  mirror: number[];
  reference: number[] | null;
  referenceName: string;
  goals: Goal[];
  /** Free text: what the reference is, CPU, client share, caveats. */
  note?: string;
  digits: number;
  /** Informational row (no goal from the issue; e.g. nginx proxy_cache). */
  info?: boolean;
}

export interface RowResult extends Row {
  mirrorSummary: Summary;
  referenceSummary: Summary | null;
  ratios: number[] | null;
  ratioSummary: Summary | null;
  status: 'pass' | 'miss' | '';
}

export interface Skipped {
  phase: string;
  reason: string;
}

export class Report {
  readonly rows: RowResult[] = [];
  readonly skipped: Skipped[] = [];

  add(row: Row): RowResult {
    const ratios =
      row.reference && row.reference.length === row.mirror.length ? row.mirror.map((m, i) => m / row.reference![i]!) : null;
    const r: RowResult = {
      ...row,
      mirrorSummary: summary(row.mirror),
      referenceSummary: row.reference ? summary(row.reference) : null,
      ratios,
      ratioSummary: ratios ? summary(ratios) : null,
      status: '',
    };
    if (row.goals.length > 0) {
      const ok = row.goals.every((g) => {
        const v = g.on === 'ratio' ? r.ratioSummary?.median : r.mirrorSummary.median;
        if (v === undefined || Number.isNaN(v)) return false;
        return g.op === '>=' ? v >= g.value : g.op === '<=' ? v <= g.value : v < g.value;
      });
      r.status = ok ? 'pass' : 'miss';
    }
    this.rows.push(r);
    return r;
  }

  skip(phase: string, reason: string): void {
    this.skipped.push({ phase, reason });
  }

  /** Markdown table, then the skipped phases. */
  render(): string {
    const cell = (s: Summary | null, d: number): string => {
      if (!s || s.n === 0) return '—';
      return s.n > 1 && s.min !== s.max ? `${fmt(s.median, d)} (${fmt(s.min, d)}–${fmt(s.max, d)})` : fmt(s.median, d);
    };
    const goalText = (r: RowResult): string =>
      r.goals.map((g) => `${g.on === 'ratio' ? 'ratio' : 'value'} ${g.op === '>=' ? '≥' : g.op === '<=' ? '≤' : '<'} ${g.value}`).join(', ');
    const lines = [
      '| phase | measure | mirror | reference | ratio m÷r | better | goal | |',
      '|---|---|---:|---:|---:|---|---|---|',
    ];
    for (const r of this.rows) {
      const ref = r.referenceSummary ? `${cell(r.referenceSummary, r.digits)} ${r.referenceName}` : r.referenceName || '—';
      const label = `${r.info ? '(info) ' : ''}${r.label} [${r.unit}]${r.note ? ` — ${r.note}` : ''}`;
      lines.push(
        `| ${r.phase} | ${label} | ${cell(r.mirrorSummary, r.digits)} | ${ref} | ${cell(r.ratioSummary, 2)} | ${r.better} | ${goalText(r) || '—'} | ${r.status} |`,
      );
    }
    if (this.skipped.length > 0) {
      lines.push('', 'Skipped:');
      for (const s of this.skipped) lines.push(`- ${s.phase}: ${s.reason}`);
    }
    return lines.join('\n');
  }
}
