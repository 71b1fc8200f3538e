/**
 * Server-side encryption at rest as a `StorageBackend` decorator: `EncryptedStorage`
 * wraps any backend and stores every file as a `.tachyon-enc` envelope (format v1,
 * key slot "master key": docs/encryption-at-rest.md) under the same name. Each file gets
 * a fresh random content key, wrapped by the current master key of a `KeyProvider`;
 * the key id is in the header. Reads are transparent (sizes, ranged reads and listings
 * are in plaintext terms; the envelope size grows monotonically with the plaintext size,
 * so sorting by size is unchanged). Re-keying rewrites only headers
 * (`rewrapEnvelopeFile`, `tachyon keys rotate`).
 *
 * Writers accept chunks in any order: each 64 KiB segment is sealed and handed to the
 * inner writer once all its bytes are there. A chunk rewritten after its segment was
 * sealed is taken as a retransmission of the same bytes and dropped.
 */
import { randomBytes } from 'node:crypto';
import {
  checkChunk,
  checkRange,
  checkSize,
  CoverageSet,
  incomplete,
  normalizeStoragePath,
  writerClosed,
  type ChunkWriter,
  type ListOptions,
  type ListPage,
  type ReadHandle,
  type StorageBackend,
  type StorageCapabilities,
  type StorageEntry,
  type WriterOptions,
} from './backend.js';
import { diagnoseSegment, openEnvelope, type OpenedEnvelope } from './envelope/codec.js';
import {
  decodeHeader,
  envelopeError,
  envelopeSize,
  HEADER_BYTES,
  plaintextSize,
  SEGMENT_OVERHEAD,
  SEGMENT_PLAIN,
  segmentCount,
  segmentOffset,
  segmentPlainLength,
} from './envelope/format.js';
import { sealHeader } from './envelope/keys.js';
import type { KeyProvider } from './envelope/keyring.js';
import { openSegment, sealSegment } from './envelope/segment.js';

function plainEntry(e: StorageEntry): StorageEntry {
  if (e.kind !== 'file') return e;
  return { ...e, size: plaintextSize(e.size) ?? 0 };
}

async function openMasterEnvelope(header: Buffer, keys: KeyProvider, what: string): Promise<OpenedEnvelope> {
  const h = decodeHeader(header);
  if (h.slot.kind !== 'master') {
    throw envelopeError('wrong-key', `${what} is encrypted with a passphrase (client-side), not with a master key`);
  }
  const kek = await keys.key(h.slot.keyId);
  return openEnvelope(header, kek);
}

class DecryptingHandle implements ReadHandle {
  private cacheIndex = -1;
  private cache: Buffer | undefined;

  constructor(
    private readonly inner: ReadHandle,
    private readonly env: OpenedEnvelope,
    readonly size: number,
    private readonly path: string,
  ) {}

  private sealedLength(i: number): number {
    return segmentPlainLength(i, this.size) + SEGMENT_OVERHEAD;
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this.path, offset, length);
    const end = Math.min(this.size, offset + length);
    if (end <= offset) return Buffer.alloc(0);
    const n = segmentCount(this.size);
    const first = Math.floor(offset / SEGMENT_PLAIN);
    const last = Math.floor((end - 1) / SEGMENT_PLAIN);
    const out = Buffer.allocUnsafe(end - offset);
    let at = 0;
    let i = first;
    if (i === this.cacheIndex && this.cache) {
      const from = offset - i * SEGMENT_PLAIN;
      const k = Math.min(this.cache.length - from, end - offset);
      this.cache.copy(out, 0, from, from + k);
      at = k;
      i++;
    }
    if (i <= last) {
      const start = segmentOffset(i);
      const stop = segmentOffset(last) + this.sealedLength(last);
      const sealed = await this.inner.read(start, stop - start);
      if (sealed.length !== stop - start) throw envelopeError('truncated', `${this.path}: the stored file is shorter than its envelope size`);
      for (let pos = 0; i <= last; i++) {
        const len = this.sealedLength(i);
        const seg = sealed.subarray(pos, pos + len);
        const p = openSegment(this.env.keys, this.env.headerBytes, i, i === n - 1, seg);
        if (!p) throw diagnoseSegment(this.env, i, n, Buffer.from(seg));
        const from = i === first ? offset - i * SEGMENT_PLAIN : 0;
        const k = Math.min(p.length - from, end - offset - at);
        p.copy(out, at, from, from + k);
        at += k;
        pos += len;
        this.cacheIndex = i;
        this.cache = p;
      }
    }
    return out;
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

class EncryptingWriter implements ChunkWriter {
  private state: 'open' | 'committed' | 'aborted' = 'open';
  private readonly pending = new Map<number, { buf: Buffer; cov: CoverageSet }>();
  private readonly sealed: Uint8Array;
  private sealedCount = 0;
  private readonly n: number;
  private readonly writes = new Set<Promise<void>>();
  private failure: unknown;

  constructor(
    private readonly inner: ChunkWriter,
    private readonly env: OpenedEnvelope,
    readonly path: string,
    readonly size: number,
  ) {
    this.n = segmentCount(size);
    this.sealed = new Uint8Array(this.n);
    this.track(inner.write(0, env.headerBytes));
  }

  private track(p: Promise<void>): void {
    const q = p.catch((err: unknown) => {
      this.failure ??= err;
    });
    this.writes.add(q);
    void q.finally(() => this.writes.delete(q));
  }

  private seal(i: number, plain: Buffer): void {
    const out = Buffer.allocUnsafe(plain.length + SEGMENT_OVERHEAD);
    sealSegment(this.env.keys, this.env.headerBytes, i, i === this.n - 1, plain, out, 0);
    this.sealed[i] = 1;
    this.sealedCount++;
    this.track(this.inner.write(segmentOffset(i), out));
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    if (this.state !== 'open') throw writerClosed(this.path, this.state);
    checkChunk(this.path, this.size, offset, data.length);
    const src = Buffer.from(data.buffer, data.byteOffset, data.length);
    let pos = offset;
    const end = offset + data.length;
    while (pos < end) {
      const i = Math.floor(pos / SEGMENT_PLAIN);
      const segStart = i * SEGMENT_PLAIN;
      const segLen = segmentPlainLength(i, this.size);
      const stop = Math.min(end, segStart + segLen);
      if (this.sealed[i] !== 1) {
        let p = this.pending.get(i);
        if (!p) {
          p = { buf: Buffer.alloc(segLen), cov: new CoverageSet() };
          this.pending.set(i, p);
        }
        src.copy(p.buf, pos - segStart, pos - offset, stop - offset);
        p.cov.add(pos - segStart, stop - segStart);
        if (p.cov.covers(segLen)) {
          this.pending.delete(i);
          this.seal(i, p.buf);
        }
      }
      pos = stop;
    }
    if (this.failure !== undefined) throw this.failure;
  }

  async commit(): Promise<void> {
    if (this.state !== 'open') throw writerClosed(this.path, this.state);
    if (this.size === 0 && this.sealedCount === 0) this.seal(0, Buffer.alloc(0));
    if (this.sealedCount !== this.n) throw incomplete(this.path);
    await Promise.all([...this.writes]);
    if (this.failure !== undefined) throw this.failure;
    await this.inner.commit();
    this.state = 'committed';
    this.pending.clear();
  }

  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    this.pending.clear();
    await Promise.all([...this.writes]);
    await this.inner.abort();
  }
}

export class EncryptedStorage implements StorageBackend {
  readonly capabilities: StorageCapabilities;

  constructor(
    private readonly inner: StorageBackend,
    private readonly keys: KeyProvider,
  ) {
    this.capabilities = inner.capabilities;
  }

  async stat(path: string): Promise<StorageEntry> {
    return plainEntry(await this.inner.stat(path));
  }

  async list(dir: string, options?: ListOptions): Promise<ListPage> {
    const page = await this.inner.list(dir, options);
    return { entries: page.entries.map(plainEntry), total: page.total };
  }

  async openRead(path: string): Promise<ReadHandle> {
    const shown = normalizeStoragePath(path);
    const h = await this.inner.openRead(path);
    try {
      const plain = plaintextSize(h.size);
      const header = await h.read(0, HEADER_BYTES);
      const env = await openMasterEnvelope(header, this.keys, shown);
      if (plain === undefined) throw envelopeError('bad-size', `${shown}: size ${h.size} is not a possible envelope size (truncated or extended)`);
      return new DecryptingHandle(h, env, plain, shown);
    } catch (err) {
      await h.close();
      throw err;
    }
  }

  async createWriter(path: string, size: number, options?: WriterOptions): Promise<ChunkWriter> {
    const shown = normalizeStoragePath(path);
    checkSize(shown, size);
    const keyId = this.keys.currentKeyId();
    const kek = await this.keys.key(keyId);
    const env = openEnvelope(sealHeader({ kek, contentKey: randomBytes(32), slot: { kind: 'master', keyId } }), kek);
    const inner = await this.inner.createWriter(path, envelopeSize(size), options);
    return new EncryptingWriter(inner, env, inner.path, size);
  }

  mkdir(path: string, options?: { readonly recursive?: boolean }): Promise<void> {
    return this.inner.mkdir(path, options);
  }

  rename(from: string, to: string, options?: { readonly overwrite?: boolean }): Promise<void> {
    return this.inner.rename(from, to, options);
  }

  remove(path: string, options?: { readonly recursive?: boolean }): Promise<void> {
    return this.inner.remove(path, options);
  }
}

