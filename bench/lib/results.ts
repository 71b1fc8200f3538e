// Raw results of bench/wan-bench.sh: one JSON object per line (bench/results/*.jsonl).
// This module validates them and offers the figures the report needs.
import { z } from 'zod';

const optNum = z.number().nullable().optional();

export const RunRecordSchema = z.object({
  type: z.literal('run'),
  scenario: z.string(),
  run: z.number().int().positive(),
  tool: z.string(),
  label: z.string().optional(),
  ok: z.boolean(),
  /** The command was cut off by its time limit; the figure is from the bytes that arrived. */
  partial: z.boolean().optional(),
  /** The tool could not run here at all (e.g. no BBR in the kernel). */
  unavailable: z.boolean().optional(),
  /** Goodput from the harness's wall clock: bytes * 8 / seconds / 1e6. */
  mbps: optNum,
  bytes: optNum,
  seconds: optNum,
  /** What the tool itself reported (Tachyon's `done` event). */
  toolMbps: optNum,
  toolSeconds: optNum,
  toolBytes: optNum,
  toolTransferSeconds: optNum,
  toolCpuSeconds: optNum,
  /** Transport counters from Tachyon's `done` event, kept as they come. */
  toolStats: z.unknown().optional(),
  bytesReceived: optNum,
  /** Failed Tachyon run: bytes of its last progress event. */
  progressBytes: optNum,
  cpuSender: optNum,
  cpuReceiver: optNum,
  retransmits: optNum,
  exitCode: optNum,
  cc: z.string().nullable().optional(),
  medianMs: optNum,
  rttMs: z.array(z.number()).optional(),
  pingSent: optNum,
  pingReceived: optNum,
  error: z.string().optional(),
  note: z.string().optional(),
  cmd: z.string().optional(),
});
export type RunRecord = z.infer<typeof RunRecordSchema>;

export const MetaRecordSchema = z.object({
  type: z.literal('meta'),
  startedAt: z.string(),
  invocation: z.string(),
  quick: z.boolean(),
  runs: z.number().int(),
  scenarios: z.array(z.string()),
  commit: z.string(),
  dirty: z.boolean(),
  nproc: z.number().int(),
  kernel: z.string(),
  cpu: z.string().optional(),
  memGiB: optNum,
  node: z.string(),
  iperf3: z.string().optional(),
  openssh: z.string().optional(),
  bbr: z.boolean(),
  defaultCc: z.string().optional(),
  tachyonCli: z.string().optional(),
  loadavg: z.string().optional(),
  /** Emulated paths of others that were up when the benchmark started. */
  otherPaths: z.string().optional(),
});
export type MetaRecord = z.infer<typeof MetaRecordSchema>;

export const ScenarioRecordSchema = z.object({
  type: z.literal('scenario'),
  scenario: z.string(),
  title: z.string(),
  rate: z.string(),
  rtt: z.string(),
  loss: z.string(),
  runs: z.number().int(),
  defaultCc: z.string().optional(),
  rateLimit: z.string().optional(),
  mtu: optNum,
  tachyonMiB: optNum,
  scpMiB: optNum,
  scpTimeout: optNum,
  iperfSeconds: optNum,
  pingIdleCount: optNum,
  pingInterval: optNum,
  targetMs: optNum,
  targetTotalMbps: optNum,
  targetShareMin: optNum,
  targetShareMax: optNum,
  targetMbps: optNum,
  targetTolerance: optNum,
  clkTck: optNum,
});
export type ScenarioRecord = z.infer<typeof ScenarioRecordSchema>;

export const ScenarioEndRecordSchema = z.object({
  type: z.literal('scenario-end'),
  scenario: z.string(),
  seconds: z.number(),
  wanStats: z.string().optional(),
  /** Commands that set the scenario up (path, TCP tuning, servers), in order. */
  setupCmds: z.array(z.string()).optional(),
});
export type ScenarioEndRecord = z.infer<typeof ScenarioEndRecordSchema>;

export const EndRecordSchema = z.object({
  type: z.literal('end'),
  finishedAt: z.string(),
  seconds: z.number(),
});
export type EndRecord = z.infer<typeof EndRecordSchema>;

export const AbortedRecordSchema = z.object({
  type: z.literal('aborted'),
  exitCode: z.number(),
  reason: z.string(),
});
export type AbortedRecord = z.infer<typeof AbortedRecordSchema>;

export const RecordSchema = z.discriminatedUnion('type', [
  AbortedRecordSchema,
  RunRecordSchema,
  MetaRecordSchema,
  ScenarioRecordSchema,
  ScenarioEndRecordSchema,
  EndRecordSchema,
]);
export type BenchRecord = z.infer<typeof RecordSchema>;

export interface ScenarioData {
  name: string;
  info: ScenarioRecord | undefined;
  end: ScenarioEndRecord | undefined;
  runs: RunRecord[];
}

export interface BenchResults {
  meta: MetaRecord | undefined;
  end: EndRecord | undefined;
  /** Why the benchmark stopped early, if it did. */
  aborted: AbortedRecord | undefined;
  /** In the order the scenarios first appear. */
  scenarios: ScenarioData[];
  /** Lines that could not be used, with the reason. */
  warnings: string[];
}

/** Parses a JSON-lines results file; bad lines become warnings, never exceptions. */
export function parseResults(text: string): BenchResults {
  const out: BenchResults = { meta: undefined, end: undefined, aborted: undefined, scenarios: [], warnings: [] };
  const byName = new Map<string, ScenarioData>();
  const scenario = (name: string): ScenarioData => {
    let s = byName.get(name);
    if (!s) {
      s = { name, info: undefined, end: undefined, runs: [] };
      byName.set(name, s);
      out.scenarios.push(s);
    }
    return s;
  };
  text.split('\n').forEach((line, i) => {
    if (line.trim() === '') return;
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch {
      out.warnings.push(`line ${i + 1}: not JSON`);
      return;
    }
    const parsed = RecordSchema.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      out.warnings.push(`line ${i + 1}: ${issue ? `${issue.path.join('.')}: ${issue.message}` : 'invalid record'}`);
      return;
    }
    const r = parsed.data;
    switch (r.type) {
      case 'meta':
        out.meta = r;
        break;
      case 'end':
        out.end = r;
        break;
      case 'aborted':
        out.aborted = r;
        break;
      case 'scenario':
        scenario(r.scenario).info = r;
        break;
      case 'scenario-end':
        scenario(r.scenario).end = r;
        break;
      case 'run':
        scenario(r.scenario).runs.push(r);
        break;
    }
  });
  return out;
}

// ---------------------------------------------------------------- statistics

export function median(values: readonly number[]): number | undefined {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = Math.floor(v.length / 2);
  return v.length % 2 === 1 ? v[mid] : ((v[mid - 1] ?? 0) + (v[mid] ?? 0)) / 2;
}

/** Nearest-rank percentile, p in [0, 100]. */
export function percentile(values: readonly number[], p: number): number | undefined {
  const v = values.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const rank = Math.min(v.length, Math.max(1, Math.ceil((p / 100) * v.length)));
  return v[rank - 1];
}

export function isNum(x: number | null | undefined): x is number {
  return typeof x === 'number' && Number.isFinite(x);
}

/** Number of runs in a scenario: the planned count, or the highest run seen. */
export function runCount(s: ScenarioData): number {
  const seen = s.runs.reduce((m, r) => Math.max(m, r.run), 0);
  return Math.max(seen, s.info?.runs ?? 0);
}

/** The record of one tool in one run (the last one, should a run repeat). */
export function recordOf(s: ScenarioData, tool: string, run: number): RunRecord | undefined {
  let found: RunRecord | undefined;
  for (const r of s.runs) if (r.tool === tool && r.run === run) found = r;
  return found;
}

/** Tools in the order they first appear. */
export function toolsOf(s: ScenarioData): string[] {
  return [...new Set(s.runs.map((r) => r.tool))];
}

/** Goodput of a usable run (full or partial), else undefined. */
export function goodput(r: RunRecord | undefined): number | undefined {
  return r && r.ok && isNum(r.mbps) ? r.mbps : undefined;
}

/** Per-run series of a figure, indexed 1..runs (index 0 unused). */
export function series(s: ScenarioData, f: (run: number) => number | undefined): (number | undefined)[] {
  const n = runCount(s);
  const out: (number | undefined)[] = [undefined];
  for (let run = 1; run <= n; run++) out.push(f(run));
  return out;
}

export function defined(xs: readonly (number | undefined)[]): number[] {
  return xs.filter((x): x is number => isNum(x));
}

/** Median over runs of tool ÷ base measured in the same run. */
export function medianRatio(s: ScenarioData, tool: string, base: string): number | undefined {
  return median(
    defined(
      series(s, (run) => {
        const a = goodput(recordOf(s, tool, run));
        const b = goodput(recordOf(s, base, run));
        return a !== undefined && b !== undefined && b > 0 ? a / b : undefined;
      }),
    ),
  );
}

export interface LossStat {
  direction: string;
  packets: number;
  lost: number;
}

/** Random losses the emulator applied, from `wan stats` text. */
export function parseWanStats(text: string | undefined): LossStat[] {
  if (!text) return [];
  const out: LossStat[] = [];
  for (const line of text.split('\n')) {
    const m = /^(\S+)\s+rx=(\d+)\s.*\blost_random=(\d+)/.exec(line.trim());
    if (m && m[1] && m[2] && m[3]) out.push({ direction: m[1], packets: Number(m[2]), lost: Number(m[3]) });
  }
  return out;
}
