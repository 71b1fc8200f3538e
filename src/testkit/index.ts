/**
 * Test kit: a deterministic simulated clock and datagram network for protocol tests.
 * Depends only on src/core and on transport types; nothing under src/ outside testkit
 * may import it (enforced by test/architecture.test.ts).
 */
export { SimClock, type SimClockOptions } from './simclock.js';
export {
  SimNetwork,
  SimLink,
  mulberry32,
  type LinkConfig,
  type LinkStats,
  type SimEvent,
  type SimEventKind,
  type SimNetworkOptions,
} from './simnet.js';
