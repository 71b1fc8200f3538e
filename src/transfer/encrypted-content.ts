/**
 * Client-side encryption at rest for the sending role: each local file is announced as
 * `NAME.tachyon-enc` with its envelope size, and its blocks are the envelope's bytes,
 * encrypted on the fly at whatever offset the data sender asks for (out of order,
 * retransmissions, resume). The server stores the envelope and never sees the key; the
 * end-to-end SHA-256 is over the envelope, i.e. over what is stored.
 *
 * Resume: a later run must produce the same envelope bytes as the interrupted one. The
 * segment nonces are synthetic (deterministic given the key and the plaintext), so it is
 * enough to reuse the file's header: with a `HeaderStore`, the header of each file is
 * remembered under a key naming the destination, the file and its size and time, and
 * reused (after unwrapping it with the passphrase) when the same file is sent there again.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { closeSync, mkdirSync, readFileSync, readSync, renameSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { TachyonError, toTachyonError } from '../core/errors.js';
import {
  decodeHeader,
  defaultKdf,
  ENVELOPE_EXTENSION,
  envelopeSize,
  EnvelopeEncryptor,
  HEADER_BYTES,
  KekCache,
  plaintextSize,
  openEnvelope,
  sealHeader,
  type KdfParams,
  type OpenedEnvelope,
} from '../storage/envelope/index.js';
import type { BlockSource } from '../transport/session/sender.js';
import { openNoFollow, type HashedRanges, type ReadOpener } from './resume.js';

/** A local file as the sending role sees it (kept structural to avoid a cycle with roles.ts). */
export interface ContentFile {
  path: string;
  abs: string;
  size: number;
  mtimeMs: number;
  /** the local file's own size, when what is sent is derived from it (the envelope) */
  plainSize?: number;
}

/** A block source the sending role can also ask for the whole-content digest and close. */
export interface TxBlocks extends BlockSource {
  digest(): string;
  close(): void;
}

/** How the sending role turns a local file into what it sends (default: the file's own bytes). */
export interface SendContent {
  /** the file as announced (name and size of what is sent) */
  announced<F extends ContentFile>(f: F): F;
  /** the blocks of an announced file from `offset` on; `prefix` is the SHA-256 state after the bytes before it */
  open(f: ContentFile, offset: number, prefix: Hash | undefined, openFile?: ReadOpener): TxBlocks;
  /** like resume.ts hashRanges, over what is sent */
  hash(f: ContentFile, end: number, ranges: readonly { at: number; len: number }[], prefix: boolean, openFile?: ReadOpener): Promise<HashedRanges>;
}

/** Where headers of files being sent are remembered, so that a resumed upload re-creates the same envelope. */
export interface HeaderStore {
  get(key: string): Buffer | undefined;
  put(key: string, header: Buffer): void;
}

/** Headers in a directory (one 128-byte file per key, 0600 in a 0700 directory; not secret: headers are in every envelope). */
export function directoryHeaderStore(dir: string): HeaderStore {
  const file = (key: string): string => path.join(dir, `${createHash('sha256').update(key).digest('hex')}.hdr`);
  return {
    get(key) {
      try {
        const b = readFileSync(file(key));
        return b.length === HEADER_BYTES ? b : undefined;
      } catch {
        return undefined;
      }
    },
    put(key, header) {
      try {
        mkdirSync(dir, { recursive: true, mode: 0o700 });
        const tmp = `${file(key)}.${randomBytes(4).toString('hex')}`;
        writeFileSync(tmp, header, { mode: 0o600 });
        renameSync(tmp, file(key));
      } catch {
        // best effort: without it, an interrupted upload starts over
      }
    },
  };
}

export function memoryHeaderStore(): HeaderStore {
  const m = new Map<string, Buffer>();
  return { get: (k) => m.get(k), put: (k, h) => void m.set(k, Buffer.from(h)) };
}

export interface EncryptingContentOptions {
  passphrase: string;
  /** KDF for new headers (default argon2id 64 MiB × 3 with a fresh salt, one per run) */
  kdf?: KdfParams;
  /** remembered headers, for resume (without: every run encrypts afresh, so nothing can be resumed) */
  headers?: HeaderStore;
  /** names the destination in the header store's keys (e.g. user@host:port:DEST) */
  scope?: string;
}

const CHUNK = 1 << 20;

function readPlain(fd: number, abs: string): (pos: number, len: number, out: Buffer, at: number) => void {
  return (pos, len, out, at) => {
    let got = 0;
    while (got < len) {
      const n = readSync(fd, out, at + got, len - got, pos + got);
      if (n === 0) throw new TachyonError('IO', `${abs} shrank while being sent`);
      got += n;
    }
  };
}

class EnvelopeBlocks implements TxBlocks {
  private fd = -1;
  private enc: EnvelopeEncryptor | undefined;

  constructor(
    private readonly env: OpenedEnvelope,
    private readonly f: ContentFile,
    private readonly offset: number,
    private readonly prefix: Hash | undefined,
    private readonly openFile: ReadOpener,
  ) {}

  private get(): EnvelopeEncryptor {
    if (!this.enc) {
      try {
        this.fd = this.openFile(this.f.abs);
      } catch (err) {
        throw toTachyonError(err, 'IO');
      }
      this.enc = new EnvelopeEncryptor(this.env, this.f.plainSize ?? 0, readPlain(this.fd, this.f.abs));
      if (this.prefix) this.enc.resumeAt(this.offset, this.prefix);
    }
    return this.enc;
  }

  read(offset: number, len: number, out: Buffer, at: number): void {
    this.get().read(this.offset + offset, len, out, at);
  }

  digest(): string {
    return this.get().digest();
  }

  close(): void {
    if (this.fd >= 0) {
      try {
        closeSync(this.fd);
      } catch {
        // closed
      }
      this.fd = -1;
    }
  }
}

/**
 * Prepares client-side encryption for `files` (local files as listed): derives the
 * key-encryption key once, reuses remembered headers where they still open with this
 * passphrase, and makes fresh headers (fresh content key and file id) for the rest.
 */
export async function encryptingContent(files: readonly ContentFile[], opts: EncryptingContentOptions): Promise<SendContent> {
  const keks = new KekCache(opts.passphrase);
  const kdf = opts.kdf ?? defaultKdf();
  const kek = await keks.get(kdf);
  const envs = new Map<string, OpenedEnvelope>();
  const keyOf = (f: ContentFile): string => JSON.stringify([opts.scope ?? '', f.path, f.abs, f.size, f.mtimeMs]);
  for (const f of files) {
    let env: OpenedEnvelope | undefined;
    const old = opts.headers?.get(keyOf(f));
    if (old) {
      try {
        const h = decodeHeader(old);
        if (h.slot.kind === 'passphrase') {
          const k = await keks.get(h.slot.kdf);
          env = openEnvelope(old, k);
        }
      } catch {
        env = undefined; // another passphrase, or damaged: start afresh
      }
    }
    if (!env) {
      env = openEnvelope(sealHeader({ kek, contentKey: randomBytes(32), slot: { kind: 'passphrase', kdf } }), kek);
      opts.headers?.put(keyOf(f), env.headerBytes);
    }
    envs.set(f.abs, env);
  }
  const envOf = (f: ContentFile): OpenedEnvelope => {
    const e = envs.get(f.abs);
    if (!e) throw new TachyonError('INTERNAL', `no envelope prepared for ${f.abs}`);
    return e;
  };
  return {
    announced<F extends ContentFile>(f: F): F {
      return { ...f, path: f.path + ENVELOPE_EXTENSION, size: envelopeSize(f.size), plainSize: f.size };
    },
    open(f, offset, prefix, openFile = openNoFollow) {
      return new EnvelopeBlocks(envOf(f), f, offset, prefix, openFile);
    },
    async hash(f, end, ranges, prefix, openFile = openNoFollow) {
      const blocks = new EnvelopeBlocks(envOf(f), f, 0, undefined, openFile);
      try {
        const buf = Buffer.allocUnsafe(CHUNK);
        const sums: HashedRanges['sums'] = [];
        const whole = prefix ? createHash('sha256') : undefined;
        let ri = 0;
        let rh: Hash | undefined;
        const from = prefix ? 0 : ranges.length ? ranges[0]!.at : end;
        for (let pos = from; pos < end; ) {
          if (!prefix && ri < ranges.length && pos < ranges[ri]!.at) pos = ranges[ri]!.at;
          if (!prefix && ri >= ranges.length) break;
          const n = Math.min(CHUNK, end - pos);
          blocks.read(pos, n, buf, 0);
          const chunk = buf.subarray(0, n);
          whole?.update(chunk);
          let p = pos;
          while (ri < ranges.length && p < pos + n) {
            const r = ranges[ri]!;
            if (r.at >= pos + n) break;
            const a = Math.max(r.at, p);
            const b = Math.min(r.at + r.len, pos + n);
            if (b > a) (rh ??= createHash('sha256')).update(chunk.subarray(a - pos, b - pos));
            if (r.at + r.len <= pos + n) {
              sums.push({ at: r.at, len: r.len, sha256: (rh ?? createHash('sha256')).digest('hex') });
              rh = undefined;
              ri++;
              p = b;
            } else break;
          }
          pos += n;
          await new Promise((r) => setImmediate(r));
        }
        return { prefix: whole, sums };
      } finally {
        blocks.close();
      }
    },
  };
}

const encryptionRequired = (what: string, detail: string): TachyonError =>
  new TachyonError('ENCRYPTION_REQUIRED', `${what}: ${detail}`, {
    publicMessage: `Refused: this account accepts only files encrypted by the client (send them with --encrypt-at-rest, as NAME${ENVELOPE_EXTENSION}); ${detail}.`,
    details: { reason: detail, path: what },
  });

/**
 * The receiving side of an account that requires client-side encryption: a file whose
 * name lacks `.tachyon-enc` or whose size no envelope can have is refused before any
 * data flows; a received file is refused (and removed) unless it starts with a valid
 * version-1 passphrase header. The server needs no key for either check.
 */
export function envelopeOnlyUploads(display: (abs: string) => string = (p) => path.basename(p)): {
  admit: (final: string, size: number) => void;
  checkStored: (temp: string, size: number, open: ReadOpener) => void;
} {
  return {
    admit(final, size) {
      if (!final.endsWith(ENVELOPE_EXTENSION)) throw encryptionRequired(display(final), `the name does not end in ${ENVELOPE_EXTENSION}`);
      if (plaintextSize(size) === undefined) throw encryptionRequired(display(final), `${size} bytes is not the size of an encrypted file`);
    },
    checkStored(temp, _size, open) {
      let fd: number;
      try {
        fd = open(temp);
      } catch (err) {
        throw toTachyonError(err, 'IO');
      }
      try {
        const b = Buffer.alloc(HEADER_BYTES);
        const n = readSync(fd, b, 0, HEADER_BYTES, 0);
        let ok = false;
        try {
          ok = decodeHeader(b.subarray(0, n)).slot.kind === 'passphrase';
        } catch {
          ok = false;
        }
        if (!ok) throw encryptionRequired(display(temp).replace(/(^|\/)\.([^/]*)\.tachyon-partial$/, '$1$2'), 'the content has no valid encryption header');
      } finally {
        closeSync(fd);
      }
    },
  };
}
