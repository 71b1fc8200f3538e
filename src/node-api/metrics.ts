/**
 * Prometheus metrics of one transfer server: a prom-client `Registry` of its own (never
 * the global default) whose transfer metrics are read from the monitor's cumulative
 * counters when scraped (so nothing is counted twice and nothing is missed before the
 * registry exists), plus Node's process metrics. Names: docs/monitoring.md.
 */
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { TransferMonitor, TransferDirection } from '../server/monitor.js';

/** Sets a counter to the monitor's cumulative value for each label (a counter that only the monitor moves). */
function mirror<T extends string>(c: Counter<T>, values: Record<string, number>, label: T): void {
  c.reset();
  for (const [k, v] of Object.entries(values)) c.inc({ [label]: k } as Record<T, string>, v);
}

export function createTransferMetrics(monitor: TransferMonitor, o: { processMetrics?: boolean } = {}): Registry {
  const register = new Registry();
  const registers = [register];
  const t = monitor.totals;
  new Gauge({
    name: 'tachyon_transfer_sessions_active',
    help: 'Transfer sessions running now.',
    registers,
    collect() {
      this.set(monitor.activeCount());
    },
  });
  new Counter({
    name: 'tachyon_transfer_sessions_total',
    help: 'Finished transfer sessions by outcome (completed, failed, cancelled).',
    labelNames: ['outcome'] as const,
    registers,
    collect() {
      mirror(this, t.sessions, 'outcome');
    },
  });
  new Counter({
    name: 'tachyon_transfer_bytes_total',
    help: 'File bytes carried over UDP, by direction as the client sees it (upload: into this server).',
    labelNames: ['direction'] as const,
    registers,
    collect() {
      mirror(this, t.bytes satisfies Record<TransferDirection, number>, 'direction');
    },
  });
  new Gauge({
    name: 'tachyon_transfer_goodput_bits_per_second',
    help: 'Sum of the active sessions\u2019 file-data rates over their last progress sample.',
    registers,
    collect() {
      this.set(monitor.goodputBps());
    },
  });
  new Counter({
    name: 'tachyon_transfer_datagrams_sent_total',
    help: 'Data datagrams this server sent (downloads), retransmissions included.',
    registers,
    collect() {
      this.reset();
      this.inc(t.datagramsSent);
    },
  });
  new Counter({
    name: 'tachyon_transfer_retransmits_total',
    help: 'Data datagrams this server retransmitted (downloads).',
    registers,
    collect() {
      this.reset();
      this.inc(t.retransmits);
    },
  });
  new Gauge({
    name: 'tachyon_transfer_retransmission_ratio',
    help: 'Retransmitted over sent data datagrams since start (downloads; 0 before any).',
    registers,
    collect() {
      this.set(t.datagramsSent > 0 ? t.retransmits / t.datagramsSent : 0);
    },
  });
  new Counter({
    name: 'tachyon_transfer_datagrams_received_total',
    help: 'Data datagrams this server accepted (uploads).',
    registers,
    collect() {
      this.reset();
      this.inc(t.datagramsReceived);
    },
  });
  new Counter({
    name: 'tachyon_transfer_duplicates_received_total',
    help: 'Duplicate data datagrams this server received (uploads): the sender\u2019s retransmissions that were not needed.',
    registers,
    collect() {
      this.reset();
      this.inc(t.duplicatesReceived);
    },
  });
  new Counter({
    name: 'tachyon_transfer_refusals_total',
    help: 'Refusals by reason (auth, limit, channel, cipher, permission, jail, or an error code).',
    labelNames: ['reason'] as const,
    registers,
    collect() {
      mirror(this, t.refusals, 'reason');
    },
  });
  if (o.processMetrics !== false) collectDefaultMetrics({ register });
  return register;
}
