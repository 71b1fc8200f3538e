/** A file's place in the stream: its blocks are SSNs [ssn0, ssn0 + blocks). */
export interface SsnRange {
  ssn0: number;
  blocks: number;
}

/** Binary search over ranges sorted by ssn0 (non-overlapping): the one holding ssn. */
export function findBySsn<T extends SsnRange>(ranges: readonly T[], ssn: number): T | undefined {
  let lo = 0;
  let hi = ranges.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    const r = ranges[mid]!;
    if (ssn < r.ssn0) hi = mid - 1;
    else if (ssn >= r.ssn0 + r.blocks) lo = mid + 1;
    else return r;
  }
  return undefined;
}
