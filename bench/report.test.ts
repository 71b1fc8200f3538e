// Tests of the WAN benchmark report: node --test dist/bench/report.test.js
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { median, medianRatio, parseResults, parseWanStats, percentile } from './lib/results.js';
import { niceCeil, renderChart } from './lib/svg.js';
import { renderMarkdown, renderSvg } from './report.js';

const lines: object[] = [
  {
    type: 'meta', startedAt: '2026-01-02T03:04:05Z', invocation: 'bench/wan-bench.sh', quick: false, runs: 2,
    scenarios: ['lossy100', 'queue', 'fair2', 'fixed50', 'loopback'], commit: '0123456789abcdef0123', dirty: false,
    nproc: 2, kernel: '6.1.0', cpu: 'Test CPU', memGiB: 8, node: 'v20.0.0', bbr: true, defaultCc: 'cubic', tachyonCli: 'ok',
  },
  { type: 'scenario', scenario: 'lossy100', title: '200 Mbit/s, 100ms RTT, 1% random loss', rate: '200mbit', rtt: '100ms', loss: '1%', runs: 2, scpTimeout: 30 },
  { type: 'run', scenario: 'lossy100', run: 1, tool: 'tachyon', label: 'Tachyon', ok: true, mbps: 180, toolMbps: 190, bytes: 1, seconds: 1 },
  { type: 'run', scenario: 'lossy100', run: 1, tool: 'tcp-bbr', ok: true, mbps: 100 },
  { type: 'run', scenario: 'lossy100', run: 1, tool: 'tcp-cubic', ok: true, mbps: 1.5 },
  { type: 'run', scenario: 'lossy100', run: 1, tool: 'scp', ok: true, partial: true, mbps: 1.2 },
  { type: 'run', scenario: 'lossy100', run: 2, tool: 'tachyon', ok: false, error: 'exit 3: broken | pipe `x`' },
  { type: 'run', scenario: 'lossy100', run: 2, tool: 'tcp-bbr', ok: true, mbps: 110 },
  { type: 'run', scenario: 'lossy100', run: 2, tool: 'tcp-cubic', ok: true, mbps: 1.7 },
  { type: 'run', scenario: 'lossy100', run: 2, tool: 'scp', ok: true, partial: true, mbps: 1.4 },
  {
    type: 'scenario-end', scenario: 'lossy100', seconds: 95,
    wanStats: 'a->b rx=1000 tx=990 tx_bytes=1 lost_random=10 lost_queue=0 lost_ring=0\nb->a rx=200 tx=198 tx_bytes=1 lost_random=2 lost_queue=0 lost_ring=0',
    setupCmds: ['wan up --name bench --rate 200mbit --rtt 100ms --loss 1%'],
  },
  { type: 'scenario', scenario: 'queue', title: 'ping', rate: '200mbit', rtt: '100ms', loss: '1%', runs: 2, targetMs: 125 },
  { type: 'run', scenario: 'queue', run: 1, tool: 'ping-idle', ok: true, medianMs: 100, rttMs: [100, 100, 101], pingSent: 3, pingReceived: 3 },
  { type: 'run', scenario: 'queue', run: 1, tool: 'tachyon', ok: true, mbps: 170 },
  { type: 'run', scenario: 'queue', run: 1, tool: 'ping-loaded', ok: true, medianMs: 110, rttMs: [105, 110, 130], pingSent: 4, pingReceived: 3 },
  { type: 'run', scenario: 'queue', run: 2, tool: 'ping-idle', ok: true, medianMs: 100, rttMs: [100], pingSent: 1, pingReceived: 1 },
  { type: 'run', scenario: 'queue', run: 2, tool: 'tachyon', ok: true, mbps: 175 },
  { type: 'run', scenario: 'queue', run: 2, tool: 'ping-loaded', ok: true, medianMs: 120, rttMs: [120], pingSent: 1, pingReceived: 1 },
  { type: 'scenario', scenario: 'fair2', title: 'two', rate: '200mbit', rtt: '100ms', loss: '1%', runs: 1, targetTotalMbps: 180, targetShareMin: 0.4, targetShareMax: 0.6 },
  { type: 'run', scenario: 'fair2', run: 1, tool: 'tachyon-1', ok: true, mbps: 90, bytes: 100e6, seconds: 4 },
  { type: 'run', scenario: 'fair2', run: 1, tool: 'tachyon-2', ok: true, mbps: 95, bytes: 100e6, seconds: 4 },
  { type: 'scenario', scenario: 'fixed50', title: 'fixed', rate: '200mbit', rtt: '100ms', loss: '1%', runs: 1, targetMbps: 50, targetTolerance: 0.05 },
  { type: 'run', scenario: 'fixed50', run: 1, tool: 'tachyon', ok: true, mbps: 45, toolMbps: 49 },
  { type: 'scenario', scenario: 'loopback', title: '127.0.0.1', rate: 'none', rtt: '0ms', loss: '0%', runs: 1, targetMbps: 2500 },
  { type: 'run', scenario: 'loopback', run: 1, tool: 'tachyon', ok: true, mbps: 3000, bytes: 2 * 1024 ** 3, cpuSender: 4, cpuReceiver: 6 },
  { type: 'run', scenario: 'loopback', run: 1, tool: 'scp', ok: true, mbps: 2000, bytes: 2 * 1024 ** 3, cpuSender: 2, cpuReceiver: 3 },
  { type: 'end', finishedAt: '2026-01-02T03:24:05Z', seconds: 1200 },
];
const text = `${lines.map((l) => JSON.stringify(l)).join('\n')}\nnot json\n{"type":"run"}\n`;

test('statistics', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 2, 3]), 2.5);
  assert.equal(median([]), undefined);
  assert.equal(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90), 9);
  assert.equal(niceCeil(181), 200);
  assert.equal(niceCeil(2600), 5000);
  assert.deepEqual(parseWanStats('a->b rx=1000 tx=990 tx_bytes=1 lost_random=10 lost_queue=0'), [
    { direction: 'a->b', packets: 1000, lost: 10 },
  ]);
});

test('parses records and reports bad lines', () => {
  const res = parseResults(text);
  assert.equal(res.meta?.runs, 2);
  assert.deepEqual(res.scenarios.map((s) => s.name), ['lossy100', 'queue', 'fair2', 'fixed50', 'loopback']);
  assert.equal(res.warnings.length, 2);
  const lossy = res.scenarios[0];
  assert.ok(lossy);
  // run 2 of Tachyon failed: only run 1 counts, 180 / 100
  assert.equal(medianRatio(lossy, 'tachyon', 'tcp-bbr'), 1.8);
});

test('markdown: tables, verdicts, failures, commands', () => {
  const md = renderMarkdown(parseResults(text), { svgHref: 'benchmarks.svg', resultsName: 'bench/results/x.jsonl' });
  assert.match(md, /!\[[^\]]*\]\(benchmarks\.svg\)/);
  assert.match(md, /\| Tachyon \| 1\/2 \| 180\.0 \(190\.0\) \| ✗ F1 \| 180\.0 \| ×1\.80 \|/);
  assert.match(md, /\| scp \| 2\/2 \| 1\.20 ⏱ \| 1\.40 ⏱ \| 1\.30 \| ×0\.01 \|/);
  assert.match(md, /F1 — run 1|F1 — run 2/);
  assert.match(md, /`exit 3: broken \| pipe 'x'`/);
  // queue: median of the per-run medians 110 and 120
  assert.match(md, /\| queue \| ping RTT during a fair transfer \| 115\.0 ms \(idle 100\.0 ms\) \| ≤ 125 ms \| ✅ pass \|/);
  // fair2: 200 MB in 4 s = 400 Mbit/s together, shares 48.6% / 51.4%
  assert.match(md, /\| fair2 \| [^|]+ \| 400\.0 Mbit\/s; 48\.6% \/ 51\.4% \| [^|]+ \| ✅ pass \|/);
  assert.match(md, /\| fixed50 \| [^|]+ \| 45\.0 Mbit\/s \| 47\.5–52\.5 Mbit\/s \| ❌ fail \|/);
  assert.match(md, /\| loopback \| Tachyon goodput \| 3000\.0 Mbit\/s \(×1\.50 scp\) \| ≥ 2500 Mbit\/s \| ✅ pass \|/);
  // CPU per GiB: 4 s and 6 s for 2 GiB
  assert.match(md, /\| 2\.00 \| 3\.00 \|/);
  assert.match(md, /a->b 1,000 packets, 1\.0% dropped at random/);
  assert.match(md, /```sh\nwan up --name bench --rate 200mbit --rtt 100ms --loss 1%\n/);
  assert.match(md, /Unreadable lines/);
});

test('svg: one panel per scenario, escaped text', () => {
  const svg = renderSvg(parseResults(text));
  assert.ok(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"'));
  assert.ok(svg.trimEnd().endsWith('</svg>'));
  for (const name of ['lossy100', 'queue', 'fair2', 'fixed50', 'loopback']) assert.ok(svg.includes(`>${name}:`), name);
  assert.ok(svg.includes('target ≤ 125 ms'));
  const small = renderChart([{ title: 'a < b & c', unit: 'x', bars: [{ label: 'l', value: undefined, color: '#000' }] }], { title: 't' });
  assert.ok(small.includes('a &lt; b &amp; c'));
  assert.ok(small.includes('no result'));
});
