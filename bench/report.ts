// Report generator of the WAN benchmark: turns the raw JSON lines written by
// bench/wan-bench.sh into docs/benchmarks.md (tables per scenario, set-up, exact
// commands) and docs/benchmarks.svg (bar chart of the medians).
//
//   node dist/bench/report.js [--md docs/benchmarks.md] [--svg docs/benchmarks.svg] [RESULTS.jsonl]
//
// Without a results file it takes the newest bench/results/wan-*.jsonl.
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import {
  defined,
  goodput,
  isNum,
  median,
  medianRatio,
  parseResults,
  parseWanStats,
  percentile,
  recordOf,
  runCount,
  series,
  toolsOf,
} from './lib/results.js';
import type { BenchResults, RunRecord, ScenarioData } from './lib/results.js';
import { renderChart } from './lib/svg.js';
import type { Bar, Panel } from './lib/svg.js';

// ---------------------------------------------------------------- vocabulary

const TOOL_NAMES: Record<string, string> = {
  tachyon: 'Tachyon',
  'tachyon-1': 'Tachyon transfer 1',
  'tachyon-2': 'Tachyon transfer 2',
  'tcp-bbr': 'TCP BBR',
  'tcp-cubic': 'TCP CUBIC',
  scp: 'scp',
  'ping-idle': 'ping, idle path',
  'ping-loaded': 'ping during transfer',
};
const TOOL_ORDER = ['tachyon', 'tachyon-1', 'tachyon-2', 'tcp-bbr', 'tcp-cubic', 'scp'];
const COLORS: Record<string, string> = {
  tachyon: '#2563eb',
  'tachyon-1': '#2563eb',
  'tachyon-2': '#60a5fa',
  total: '#1e3a8a',
  'tcp-bbr': '#f59e0b',
  'tcp-cubic': '#10b981',
  scp: '#8b5cf6',
  'ping-idle': '#9ca3af',
  'ping-loaded': '#2563eb',
};
const colorOf = (tool: string): string => COLORS[tool] ?? '#6b7280';
const nameOf = (tool: string): string => TOOL_NAMES[tool] ?? tool;
const GIB = 1024 ** 3;

type Verdict = 'pass' | 'fail' | 'no data' | '—';
const VERDICT_TEXT: Record<Verdict, string> = { pass: '✅ pass', fail: '❌ fail', 'no data': '⚠️ no data', '—': '—' };

// ---------------------------------------------------------------- formatting

export function fmt(v: number | undefined, decimals?: number): string {
  if (v === undefined || !Number.isFinite(v)) return '—';
  if (decimals !== undefined) return v.toFixed(decimals);
  return Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2);
}
const pct = (v: number | undefined): string => (v === undefined ? '—' : `${(v * 100).toFixed(1)}%`);
const ratio = (v: number | undefined): string => (v === undefined ? '—' : `×${v.toFixed(2)}`);

/** Text safe inside a markdown table cell. */
export function cellText(s: string): string {
  return s.replace(/\r?\n/g, ' ').replace(/\|/g, '\\|');
}
/** Text as an inline code span (for error messages and commands in lists). */
export function codeSpan(s: string): string {
  const t = s.replace(/\s+/g, ' ').trim().replace(/`/g, "'");
  return `\`${t.length > 400 ? `${t.slice(0, 400)}…` : t}\``;
}

/** Was the 1-minute load average at least half the CPUs when the run started? */
export function busy(loadavg: string | undefined, nproc: number): boolean {
  const load1 = Number((loadavg ?? '').split(' ')[0]);
  return Number.isFinite(load1) && load1 >= nproc / 2;
}

function duration(seconds: number): string {
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  return m > 0 ? `${m} min ${s} s` : `${s} s`;
}

/** Failure notes of one scenario: cells say "✗ F1", the list below the table explains. */
class Notes {
  readonly failures: string[] = [];
  fail(r: RunRecord): string {
    this.failures.push(`F${this.failures.length + 1} — run ${r.run}, ${nameOf(r.tool)}: ${codeSpan(r.error ?? 'failed')}`);
    return `✗ F${this.failures.length}`;
  }
  render(): string[] {
    return this.failures.length ? ['', 'Failed runs:', '', ...this.failures.map((f) => `- ${f}`)] : [];
  }
}

/** One run's goodput cell: figure, ⏱ when cut off, Tachyon's own figure if it differs by > 2 %. */
function goodputCell(r: RunRecord | undefined, notes: Notes): string {
  if (!r) return '—';
  if (r.unavailable) return 'n/a';
  if (!r.ok) return notes.fail(r);
  if (!isNum(r.mbps)) return '—';
  let s = fmt(r.mbps);
  if (r.partial) s += ' ⏱';
  if (isNum(r.toolMbps) && r.mbps > 0 && Math.abs(r.toolMbps - r.mbps) / r.mbps > 0.02) s += ` (${fmt(r.toolMbps)})`;
  return s;
}

/** A markdown table; the first column is left-aligned, the others right-aligned unless `left`. */
function table(header: string[], rows: string[][], left = false): string[] {
  return [
    `| ${header.map(cellText).join(' | ')} |`,
    `| ${header.map((_, i) => (i === 0 || left ? '---' : '---:')).join(' | ')} |`,
    ...rows.map((r) => `| ${r.map(cellText).join(' | ')} |`),
  ];
}

const runHeaders = (n: number): string[] => Array.from({ length: n }, (_, i) => `Run ${i + 1}`);
const medianGoodput = (s: ScenarioData, tool: string): number | undefined =>
  median(defined(series(s, (run) => goodput(recordOf(s, tool, run)))));
const labelOf = (s: ScenarioData, tool: string): string =>
  s.runs.find((r) => r.tool === tool && r.label)?.label ?? nameOf(tool);
const sortTools = (tools: string[]): string[] =>
  [...tools].sort((a, b) => {
    const ia = TOOL_ORDER.indexOf(a);
    const ib = TOOL_ORDER.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib);
  });

// ---------------------------------------------------------------- scenarios

interface Section {
  /** Markdown lines of the scenario's section (below its heading). */
  body: string[];
  /** Row of the summary table: measure, result, target, verdict. */
  summary: [string, string, string, Verdict];
  panel: Panel;
}

/** Goodput table of several tools, with ratios against a baseline measured in the same runs. */
/** The issue's goodput targets for the loss scenarios (whole command, encrypted, 512 MiB), when the results do not name one. */
const ISSUE_TARGETS_MBPS: Record<string, number> = { lossy100: 180, lossy300: 170 };

function comparison(s: ScenarioData, base: string | undefined, cpu: boolean): Section {
  const n = runCount(s);
  const notes = new Notes();
  const tools = sortTools(toolsOf(s));
  const baseOk = base !== undefined && tools.includes(base);
  const header = ['Tool', 'OK runs', ...runHeaders(n), 'Median Mbit/s'];
  if (baseOk) header.push(`× ${nameOf(base)}`);
  if (cpu) header.push('CPU s/GiB sender', 'CPU s/GiB receiver');
  const rows = tools.map((tool) => {
    const recs = series(s, () => undefined).map((_, run) => (run === 0 ? undefined : recordOf(s, tool, run)));
    const ok = recs.filter((r) => r?.ok).length;
    const row = [labelOf(s, tool), `${ok}/${n}`];
    for (let run = 1; run <= n; run++) row.push(goodputCell(recs[run], notes));
    row.push(fmt(medianGoodput(s, tool)));
    if (baseOk) row.push(tool === base ? '1.00' : ratio(medianRatio(s, tool, base)));
    if (cpu) {
      const per = (pick: (r: RunRecord) => number | null | undefined): string =>
        fmt(
          median(
            defined(
              recs.map((r) => {
                const c = r && r.ok && !r.partial ? pick(r) : undefined;
                return r && isNum(c) && isNum(r.bytes) && r.bytes > 0 ? c / (r.bytes / GIB) : undefined;
              }),
            ),
          ),
        );
      row.push(per((r) => r.cpuSender), per((r) => r.cpuReceiver));
    }
    return row;
  });
  const body = [...table(header, rows)];
  if (s.runs.some((r) => r.partial)) {
    const t = s.info?.scpTimeout;
    body.push(
      '',
      `⏱ cut off by its time limit${t ? ` (${t} s)` : ''} before the file was complete: the figure is bytes received × 8 ÷ elapsed time.`,
    );
  }
  const unavailable = s.runs.find((r) => r.unavailable);
  if (unavailable) body.push('', `n/a: ${unavailable.error ?? 'not available here'}.`);
  if (cpu) {
    body.push(
      '',
      'CPU: user + system seconds per GiB moved. Sender = the client command under `/usr/bin/time` (scp includes its ssh child); receiver = the server process (Tachyon `serve`, or the sshd daemon with the session processes it reaped), read from `/proc/<pid>/stat` before and after.',
    );
  }
  body.push(...notes.render());

  const tm = medianGoodput(s, 'tachyon');
  let summary: Section['summary'];
  const target = s.info?.targetMbps ?? ISSUE_TARGETS_MBPS[s.name];
  // Tachyon's own timing of the transfer (the `done` event's transferSeconds): what iperf3's
  // figure measures, with node start-up and the SSH set-up left out
  const phase = series(s, (run) => {
    const r = recordOf(s, 'tachyon', run);
    return r?.ok && isNum(r.toolTransferSeconds) && r.toolTransferSeconds > 0 && isNum(r.bytes) ? (r.bytes * 8) / r.toolTransferSeconds / 1e6 : undefined;
  });
  const phaseMedian = median(defined(phase));
  if (phaseMedian !== undefined) {
    body.push(
      '',
      `Tachyon's data phase (its own timing, from the session's set-up to the verified result; node start-up and the SSH handshake left out, as iperf3 leaves out its connection): ${phase.slice(1).map((v) => fmt(v)).join(' / ')} Mbit/s, median **${fmt(phaseMedian)}**${isNum(target) ? ` (target ≥ ${target}: ${phaseMedian >= target ? 'met' : 'not met'})` : ''}; the whole command, above, is what the verdict judges.`,
    );
  }
  if (isNum(target)) {
    summary = [
      'Tachyon goodput',
      tm === undefined ? 'no successful run' : `${fmt(tm)} Mbit/s${baseOk ? ` (${ratio(medianRatio(s, 'tachyon', base))} ${nameOf(base)})` : ''}`,
      `≥ ${target} Mbit/s`,
      tm === undefined ? 'no data' : tm >= target ? 'pass' : 'fail',
    ];
  } else {
    const bm = base ? medianGoodput(s, base) : undefined;
    summary = [
      `Tachyon vs ${base ? nameOf(base) : 'others'}`,
      tm === undefined
        ? 'no successful Tachyon run'
        : `${fmt(tm)} vs ${fmt(bm)} Mbit/s (${ratio(baseOk ? medianRatio(s, 'tachyon', base) : undefined)})`,
      'higher is better',
      tm === undefined ? 'no data' : '—',
    ];
  }
  const scale = tools.some((t) => (medianGoodput(s, t) ?? 0) >= 2000);
  const panel: Panel = {
    title: `${s.name}: ${s.info?.title ?? ''}`,
    unit: scale ? 'Gbit/s' : 'Mbit/s',
    bars: tools.map((tool): Bar => {
      const m = medianGoodput(s, tool);
      const partial = s.runs.some((r) => r.tool === tool && r.partial);
      const unavail = s.runs.some((r) => r.tool === tool && r.unavailable);
      return {
        label: nameOf(tool),
        value: m === undefined ? undefined : scale ? m / 1000 : m,
        color: colorOf(tool),
        ...(partial ? { suffix: '(timed out)' } : {}),
        missing: unavail ? 'not available' : 'failed',
      };
    }),
    ...(isNum(target) ? { target: { kind: 'line' as const, value: scale ? target / 1000 : target, label: `target ≥ ${scale ? target / 1000 : target}` } } : {}),
  };
  return { body, summary, panel };
}

function pingStats(r: RunRecord | undefined): { median?: number; p90?: number; loss?: number } {
  if (!r || !r.ok) return {};
  const samples = r.rttMs ?? [];
  const out: { median?: number; p90?: number; loss?: number } = {};
  const m = isNum(r.medianMs) ? r.medianMs : median(samples);
  if (m !== undefined) out.median = m;
  const p = percentile(samples, 90);
  if (p !== undefined) out.p90 = p;
  if (isNum(r.pingSent) && r.pingSent > 0) out.loss = (r.pingSent - (r.pingReceived ?? samples.length)) / r.pingSent;
  return out;
}

function queueSection(s: ScenarioData): Section {
  const n = runCount(s);
  const notes = new Notes();
  const target = s.info?.targetMs ?? 125;
  const idle = series(s, (run) => pingStats(recordOf(s, 'ping-idle', run)).median);
  const loaded = series(s, (run) => pingStats(recordOf(s, 'ping-loaded', run)).median);
  const p90 = series(s, (run) => pingStats(recordOf(s, 'ping-loaded', run)).p90);
  const loss = series(s, (run) => pingStats(recordOf(s, 'ping-loaded', run)).loss);
  const added = series(s, (run) => {
    const a = loaded[run];
    const b = idle[run];
    return a !== undefined && b !== undefined ? a - b : undefined;
  });
  const cellsOf = (tool: string, xs: (number | undefined)[], f: (v: number | undefined) => string): string[] => {
    const out: string[] = [];
    for (let run = 1; run <= n; run++) {
      const r = recordOf(s, tool, run);
      out.push(r && !r.ok ? notes.fail(r) : f(xs[run]));
    }
    return out;
  };
  const ms = (v: number | undefined): string => fmt(v, 1);
  const mLoaded = median(defined(loaded));
  const mIdle = median(defined(idle));
  const tput = series(s, (run) => goodput(recordOf(s, 'tachyon', run)));
  const rows = [
    ['Ping RTT, idle path (median, ms)', ...cellsOf('ping-idle', idle, ms), ms(mIdle), ''],
    ['Ping RTT during the transfer (median, ms)', ...cellsOf('ping-loaded', loaded, ms), ms(mLoaded), `≤ ${target}`],
    ['Ping RTT during the transfer (90th percentile, ms)', ...cellsOf('ping-loaded', p90, ms), ms(median(defined(p90))), ''],
    ['Queueing delay added (median − idle, ms)', ...cellsOf('ping-loaded', added, ms), ms(median(defined(added))), `≤ ${fmt(target - (mIdle ?? 100), 0)}`],
    ['Pings lost during the transfer', ...cellsOf('ping-loaded', loss, pct), pct(median(defined(loss))), ''],
    ['Tachyon goodput (Mbit/s)', ...Array.from({ length: n }, (_, i) => goodputCell(recordOf(s, 'tachyon', i + 1), notes)), fmt(median(defined(tput))), ''],
  ];
  const body = [
    ...table(['Measure', ...runHeaders(n), 'Median', 'Target'], rows),
    '',
    `ping -i ${s.info?.pingInterval ?? 0.2} from host a to host b across the same path: ${s.info?.pingIdleCount ?? ''} pings on the idle path, then pings from 1.5 s after the Tachyon client started (SSH set-up) until it exited. Lost pings (the path drops 1% each way) have no RTT and are left out of the medians.`,
    ...notes.render(),
  ];
  return {
    body,
    summary: [
      'ping RTT during a fair transfer',
      mLoaded === undefined ? 'no data' : `${fmt(mLoaded, 1)} ms (idle ${fmt(mIdle, 1)} ms)`,
      `≤ ${target} ms`,
      mLoaded === undefined ? 'no data' : mLoaded <= target ? 'pass' : 'fail',
    ],
    panel: {
      title: `${s.name}: ping RTT, idle vs during a Tachyon fair transfer`,
      unit: 'ms',
      decimals: 1,
      bars: [
        { label: 'ping, idle path', value: mIdle, color: colorOf('ping-idle'), missing: 'failed' },
        { label: 'ping during Tachyon', value: mLoaded, color: colorOf('ping-loaded'), missing: 'no transfer' },
      ],
      target: { kind: 'line', value: target, label: `target ≤ ${target} ms` },
    },
  };
}

function fair2Section(s: ScenarioData): Section {
  const n = runCount(s);
  const notes = new Notes();
  const min = s.info?.targetShareMin ?? 0.4;
  const max = s.info?.targetShareMax ?? 0.6;
  const totalTarget = s.info?.targetTotalMbps ?? 180;
  const pair = (run: number): [RunRecord, RunRecord] | undefined => {
    const a = recordOf(s, 'tachyon-1', run);
    const b = recordOf(s, 'tachyon-2', run);
    return a?.ok && b?.ok && isNum(a.mbps) && isNum(b.mbps) ? [a, b] : undefined;
  };
  const total = series(s, (run) => {
    const p = pair(run);
    if (!p) return undefined;
    const [a, b] = p;
    if (!isNum(a.bytes) || !isNum(b.bytes) || !isNum(a.seconds) || !isNum(b.seconds)) return undefined;
    return ((a.bytes + b.bytes) * 8) / Math.max(a.seconds, b.seconds) / 1e6;
  });
  const share = (i: 0 | 1) =>
    series(s, (run) => {
      const p = pair(run);
      if (!p) return undefined;
      const g = [p[0].mbps ?? 0, p[1].mbps ?? 0] as const;
      return g[0] + g[1] > 0 ? g[i] / (g[0] + g[1]) : undefined;
    });
  const s1 = share(0);
  const s2 = share(1);
  const cells = (xs: (number | undefined)[], f: (v: number | undefined) => string): string[] =>
    Array.from({ length: n }, (_, i) => f(xs[i + 1]));
  const g1 = medianGoodput(s, 'tachyon-1');
  const g2 = medianGoodput(s, 'tachyon-2');
  const mt = median(defined(total));
  const ms1 = median(defined(s1));
  const ms2 = median(defined(s2));
  const rows = [
    ['Transfer 1 goodput (Mbit/s)', ...Array.from({ length: n }, (_, i) => goodputCell(recordOf(s, 'tachyon-1', i + 1), notes)), fmt(g1), ''],
    ['Transfer 2 goodput (Mbit/s)', ...Array.from({ length: n }, (_, i) => goodputCell(recordOf(s, 'tachyon-2', i + 1), notes)), fmt(g2), ''],
    ['Together (Mbit/s)', ...cells(total, (v) => fmt(v)), fmt(mt), `≥ ${totalTarget}`],
    ['Share of transfer 1', ...cells(s1, pct), pct(ms1), `${min * 100}–${max * 100}%`],
    ['Share of transfer 2', ...cells(s2, pct), pct(ms2), `${min * 100}–${max * 100}%`],
  ];
  const body = [
    ...table(['Measure', ...runHeaders(n), 'Median', 'Target'], rows),
    '',
    'Both clients start together on host a and send the same file to one server on host b. Together = both files\' bytes × 8 ÷ the longer of the two wall times; a share = one transfer\'s goodput ÷ the sum of both goodputs.',
    ...notes.render(),
  ];
  const okRuns = defined(total).length;
  // every run must meet the targets for a pass: fairness that holds only on median is not fairness
  let verdict: Verdict = 'no data';
  if (okRuns > 0) {
    const allShares = defined([...s1, ...s2]);
    verdict =
      okRuns === n && defined(total).every((t) => t >= totalTarget) && allShares.every((x) => x >= min && x <= max)
        ? 'pass'
        : 'fail';
  }
  return {
    body,
    summary: [
      'two fair transfers: together; shares',
      okRuns === 0 ? 'no data' : `${fmt(mt)} Mbit/s; ${pct(ms1)} / ${pct(ms2)}`,
      `≥ ${totalTarget} Mbit/s; each ${min * 100}–${max * 100}% (every run)`,
      verdict,
    ],
    panel: {
      title: `${s.name}: two simultaneous Tachyon fair transfers`,
      unit: 'Mbit/s',
      bars: [
        { label: 'transfer 1', value: g1, color: colorOf('tachyon-1'), missing: 'failed' },
        { label: 'transfer 2', value: g2, color: colorOf('tachyon-2'), missing: 'failed' },
        { label: 'together', value: mt, color: colorOf('total'), missing: 'failed' },
      ],
      target: { kind: 'line', value: totalTarget, label: `together ≥ ${totalTarget}` },
    },
  };
}

function fixedSection(s: ScenarioData): Section {
  const n = runCount(s);
  const notes = new Notes();
  const target = s.info?.targetMbps ?? 50;
  const tol = s.info?.targetTolerance ?? 0.05;
  const lo = target * (1 - tol);
  const hi = target * (1 + tol);
  const wall = medianGoodput(s, 'tachyon');
  const own = series(s, (run) => {
    const r = recordOf(s, 'tachyon', run);
    return r?.ok && isNum(r.toolMbps) ? r.toolMbps : undefined;
  });
  const rows = [
    ['Goodput, wall clock (Mbit/s)', ...Array.from({ length: n }, (_, i) => goodputCell(recordOf(s, 'tachyon', i + 1), notes)), fmt(wall), `${fmt(lo)}–${fmt(hi)}`],
    ["Goodput, Tachyon's own figure (Mbit/s)", ...Array.from({ length: n }, (_, i) => fmt(own[i + 1])), fmt(median(defined(own))), ''],
  ];
  return {
    body: [
      ...table(['Measure', ...runHeaders(n), 'Median', 'Target'], rows),
      '',
      `\`--policy fixed -l ${target}m\`: the rate must hold at ${target} Mbit/s ± ${tol * 100}% whatever the loss. The wall-clock figure includes connection set-up, so it reads slightly low on short transfers.`,
      ...notes.render(),
    ],
    summary: [
      `fixed ${target} Mbit/s`,
      wall === undefined ? 'no data' : `${fmt(wall)} Mbit/s`,
      `${fmt(lo)}–${fmt(hi)} Mbit/s`,
      wall === undefined ? 'no data' : wall >= lo && wall <= hi ? 'pass' : 'fail',
    ],
    panel: {
      title: `${s.name}: Tachyon --policy fixed -l ${target}m`,
      unit: 'Mbit/s',
      bars: [{ label: 'Tachyon fixed', value: wall, color: colorOf('tachyon'), missing: 'failed' }],
      target: { kind: 'band', low: lo, high: hi, label: `target ${target} ± ${tol * 100}%` },
    },
  };
}

function sectionOf(s: ScenarioData): Section {
  switch (s.name) {
    case 'queue':
      return queueSection(s);
    case 'fair2':
      return fair2Section(s);
    case 'fixed50':
      return fixedSection(s);
    case 'loopback':
      return comparison(s, 'scp', true);
    default:
      return comparison(s, toolsOf(s).includes('tcp-bbr') ? 'tcp-bbr' : undefined, false);
  }
}

function scenarioFacts(s: ScenarioData): string[] {
  const i = s.info;
  const facts: string[] = [];
  if (i) {
    const what: string[] = [];
    if (isNum(i.tachyonMiB)) what.push(`Tachyon file ${i.tachyonMiB} MiB`);
    if (isNum(i.scpMiB)) what.push(`scp file ${i.scpMiB} MiB${isNum(i.scpTimeout) ? `, at most ${i.scpTimeout} s` : ''}`);
    if (isNum(i.iperfSeconds)) what.push(`iperf3 ${i.iperfSeconds} s`);
    if (i.defaultCc) what.push(`default congestion control (scp, Tachyon's SSH) ${i.defaultCc}`);
    what.push(`${i.runs} run${i.runs === 1 ? '' : 's'}`);
    facts.push(`${what.join('; ')}.`);
  }
  const loss = parseWanStats(s.end?.wanStats);
  if (loss.length) {
    facts.push(
      `Emulator counters: ${loss
        .map((l) => `${l.direction} ${l.packets.toLocaleString('en-US')} packets, ${pct(l.packets ? l.lost / l.packets : undefined)} dropped at random`)
        .join('; ')}.`,
    );
  }
  if (s.end) facts.push(`Scenario time: ${duration(s.end.seconds)}.`);
  return facts;
}

// ---------------------------------------------------------------- document

export interface RenderOptions {
  /** Path of the SVG as the markdown should link it. */
  svgHref: string;
  /** Path of the results file as shown in the document. */
  resultsName: string;
}

export function renderMarkdown(res: BenchResults, opt: RenderOptions): string {
  const m = res.meta;
  const sections = res.scenarios.map((s) => ({ s, sec: sectionOf(s) }));
  const out: string[] = ['# Tachyon WAN benchmarks', ''];
  if (m?.quick) {
    out.push(
      '> ⚠️ **Quick smoke run** (`--quick`: small files, 1 run). The figures only show that the harness works; run `npm run bench:wan` for real ones.',
      '',
    );
  }
  if (!res.end) {
    const why = res.aborted ? ` (${res.aborted.reason})` : '';
    out.push(`> ⚠️ The benchmark did not finish${cellText(why)}: the results below are partial.`, '');
  }
  const date = m?.startedAt ? m.startedAt.replace('T', ' ').replace(/:\d\dZ$/, ' UTC') : 'unknown date';
  out.push(
    `Generated from \`${opt.resultsName}\`, measured ${date} by \`${m?.invocation ?? 'bench/wan-bench.sh'}\` (\`npm run bench:wan\` builds and runs it).`,
    '',
    ...table(
      ['Set-up', ''],
      [
        ['Tachyon commit', m ? `${m.commit.slice(0, 12)}${m.dirty ? ' (with uncommitted changes)' : ''}` : '—'],
        ['Machine', m ? `${m.nproc} CPUs${m.cpu ? ` (${m.cpu})` : ''}${isNum(m.memGiB) ? `, ${m.memGiB} GiB RAM` : ''}, Linux ${m.kernel}` : '—'],
        ['Software', m ? [`Node.js ${m.node}`, m.iperf3, m.openssh].filter(Boolean).join('; ') : '—'],
        ['Path', '`wan` (shared/wan): user-space emulator between two network namespaces, per direction rate → drop-tail queue of one BDP → random loss → half the RTT'],
        ['TCP', `buffers up to 32 MiB on both hosts; default congestion control ${m?.defaultCc ?? 'cubic'} (route \`congctl\`); iperf3 \`-C\` picks BBR or CUBIC${m && !m.bbr ? '; **BBR not available in this kernel**' : ''}`],
        ['Tachyon CLI at start', m?.tachyonCli ?? '—'],
        [
          'Other load at start',
          m ? `load average ${m.loadavg ?? '?'}${busy(m.loadavg, m.nproc) ? ' (**busy machine: figures are skewed**)' : ''}${m.otherPaths ? `; other emulated paths were up (${m.otherPaths}): traffic on them would compete for the CPUs` : '; no other emulated path'}` : '—',
        ],
        ['Total time', res.end ? duration(res.end.seconds) : 'did not finish'],
      ],
      true,
    ),
    '',
    `![Bar chart of the medians of every scenario](${opt.svgHref})`,
    '',
    '## Summary',
    '',
    ...table(
      ['Scenario', 'Measure', 'Median', 'Target', 'Verdict'],
      sections.map(({ s, sec }) => [s.name, sec.summary[0], sec.summary[1], sec.summary[2], VERDICT_TEXT[sec.summary[3]]]),
      true,
    ),
    '',
    '## How to read the tables',
    '',
    '- **Goodput** = file bytes × 8 ÷ wall-clock seconds the harness measured around the whole command, connection and SSH set-up included. When Tachyon\'s own figure (its `done` event) differs by more than 2% it follows in brackets.',
    '- **TCP BBR / TCP CUBIC**: iperf3 memory to memory from host a to host b, receiver goodput over the whole test: what TCP itself reaches on the path, with no file and no encryption.',
    '- **scp**: OpenSSH, `-c aes128-gcm@openssh.com`, a real file, under `timeout`; it runs on the hosts\' default congestion control (CUBIC, as on a stock Linux server).',
    '- **× TCP BBR**: median over runs of (tool ÷ TCP BBR measured in the same run, on the same path).',
    '- Every received file is compared with its source by sha256; a mismatch, a non-zero exit or a time-out makes a failed run (✗ Fn, explained under the table).',
    '- Medians are over the successful runs only; "OK runs" says how many there were.',
  );
  for (const { s, sec } of sections) {
    out.push('', `## ${s.name} — ${s.info?.title ?? ''}`.trimEnd(), '');
    const facts = scenarioFacts(s);
    if (facts.length) out.push(facts.join(' '), '');
    out.push(...sec.body);
  }
  out.push('', '## Commands', '', 'Exactly as run; `$TMP` is the harness\'s temp dir, `bench` the path name, `$FINGERPRINT` the server\'s host-key fingerprint. `wan` is `../shared/wan/wan`; `wan exec a|b --name bench CMD` runs CMD on host a (198.18.0.1) or b (198.18.0.2).');
  for (const { s } of sections) {
    const cmds = [
      ...(s.end?.setupCmds ?? []),
      ...new Set(s.runs.map((r) => r.cmd).filter((c): c is string => typeof c === 'string' && c !== '')),
    ];
    if (!cmds.length) continue;
    out.push('', `### ${s.name}`, '', '```sh', ...cmds, '```');
  }
  out.push(
    '',
    '## Reproduce',
    '',
    'As root on a Linux machine with the repository and `../shared/wan` beside it (the script installs iperf3, iputils-ping, openssh-client/-server, rsync, jq and time with apt if they are missing):',
    '',
    '```sh',
    'npm run bench:wan                      # all scenarios, 3 runs each (about 20 minutes)',
    'npm run bench:wan -- --quick           # small files, 1 run: a smoke test of a few minutes',
    'npm run bench:wan -- --runs 5 --only lossy100,queue',
    '```',
    '',
    'Progress goes to stderr. Every namespace, server and temp file the run creates is removed at the end, also on Ctrl-C. Sizes, time limits and the loopback rate can be changed through environment variables listed at the top of `bench/wan-bench.sh`.',
    '',
    '## Raw data',
    '',
    `\`${opt.resultsName}\` (bench/results/ is not committed): JSON lines — a \`meta\` record, then for each scenario a \`scenario\` record, one \`run\` record per tool and run, and a \`scenario-end\` record; an \`end\` record closes a complete benchmark. Regenerate this page with \`node dist/bench/report.js ${opt.resultsName}\`.`,
  );
  if (res.warnings.length) out.push('', 'Unreadable lines in the results file:', '', ...res.warnings.map((w) => `- ${w}`));
  return `${out.join('\n')}\n`;
}

export function renderSvg(res: BenchResults): string {
  const panels = res.scenarios.map((s) => sectionOf(s).panel);
  const m = res.meta;
  const n = m?.runs ?? 0;
  return renderChart(panels, {
    title: `Tachyon WAN benchmark — median${n === 1 ? ' of 1 run' : `s of ${n} runs`}${m?.quick ? ' (quick smoke run)' : ''}`,
    subtitle: m
      ? `commit ${m.commit.slice(0, 12)}${m.dirty ? '+' : ''} · ${m.startedAt.slice(0, 10)} · ${m.nproc} CPUs · Linux ${m.kernel}`
      : '',
  });
}

// ---------------------------------------------------------------- command line

function newestResults(dir: string): string {
  let names: string[] = [];
  try {
    names = readdirSync(dir).filter((f) => /^wan-.*\.jsonl$/.test(f));
  } catch {
    // no directory: reported below
  }
  const newest = names.sort().at(-1);
  if (!newest) throw new Error(`no results file (wan-*.jsonl) in ${dir}: run bench/wan-bench.sh first`);
  return path.join(dir, newest);
}

export function main(argv: string[]): number {
  const repo = fileURLToPath(new URL('../../', import.meta.url));
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      md: { type: 'string', default: path.join(repo, 'docs/benchmarks.md') },
      svg: { type: 'string', default: path.join(repo, 'docs/benchmarks.svg') },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log('usage: node dist/bench/report.js [--md FILE] [--svg FILE] [RESULTS.jsonl]');
    return 0;
  }
  const input = positionals[0] ?? newestResults(path.join(repo, 'bench/results'));
  const res = parseResults(readFileSync(input, 'utf8'));
  if (!res.meta && res.scenarios.length === 0) throw new Error(`${input}: no benchmark records`);
  const md = path.resolve(values.md);
  const svg = path.resolve(values.svg);
  const shown = path.relative(repo, path.resolve(input));
  mkdirSync(path.dirname(md), { recursive: true });
  mkdirSync(path.dirname(svg), { recursive: true });
  writeFileSync(svg, renderSvg(res));
  writeFileSync(
    md,
    renderMarkdown(res, {
      svgHref: path.relative(path.dirname(md), svg).split(path.sep).join('/'),
      resultsName: shown.startsWith('..') ? path.resolve(input) : shown,
    }),
  );
  for (const w of res.warnings) console.error(`report: warning: ${input}: ${w}`);
  console.error(`report: wrote ${path.relative(process.cwd(), md)} and ${path.relative(process.cwd(), svg)} from ${shown}`);
  return 0;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    process.exitCode = main(process.argv.slice(2));
  } catch (err) {
    console.error(`report: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  }
}
