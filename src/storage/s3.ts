/**
 * S3Storage: a StorageBackend over an S3 bucket and key prefix (`s3://bucket/prefix`),
 * through @aws-sdk/client-s3.
 *
 * - Paths map to keys under the prefix. Directories are key prefixes; `mkdir` writes a
 *   zero-byte marker object `dir/` so that empty directories exist. A directory exists
 *   when its marker or any key below it exists; the root always exists.
 * - `list` pages through ListObjectsV2 (Delimiter '/') to give the total, then sorts and
 *   slices. Listed files carry the object's LastModified; `stat` reads the mtime from the
 *   `x-amz-meta-mtime` metadata (the sender's mtime when a writer was given one).
 * - `openRead`: objects up to {@link SNAPSHOT_BYTES} are fetched whole when opened (so an
 *   open reader keeps the old content across an overwrite, as the contract asks); larger
 *   ones are read with ranged GETs pinned by `If-Match: <etag>`, so a reader never mixes
 *   two versions: once the object changed, reads fail with IO (`details.reason: 'changed'`).
 * - `createWriter`: a file of at most one part is buffered and sent with one PutObject at
 *   commit. A larger file is cut into fixed parts of `partBytes` (≥ 5 MiB); chunks arrive
 *   in any order and size, each part is buffered until every one of its bytes arrived and
 *   is then uploaded (parts go out in any order, at most `maxUploadsInFlight` at a time).
 *   Memory is bounded: at most `maxOpenParts` buffered parts (partly filled, or complete and
 *   waiting for an upload slot) plus `maxUploadsInFlight` parts being uploaded, i.e.
 *   (maxOpenParts + maxUploadsInFlight) × partBytes per writer (defaults 16 + 4 parts of
 *   8 MiB = 160 MiB worst case; a transfer that fills parts in about ascending order holds
 *   2-3). A chunk that would buffer one part too many fails with DISK_FULL
 *   (`details.reason: 'buffer-limit'`) and changes nothing; a write awaits while complete
 *   parts wait for a slot (backpressure for callers that await their writes). `commit()` completes the upload; nothing is visible under the key
 *   before. `abort()` and every failure call AbortMultipartUpload.
 * - No clobber: the target is checked with HeadObject when the writer is created and again
 *   at commit, and the final PutObject / CompleteMultipartUpload carries `If-None-Match: *`
 *   (unless `conditionalWrites: false`), so a server that supports conditional writes
 *   closes the race; one that does not (s3rver) leaves the short window between the check
 *   and the commit.
 * - `rename` is CopyObject + DeleteObject per key (not atomic; a directory is moved key by
 *   key). CopyObject is limited to 5 GiB per object by S3: larger files are refused (IO,
 *   `details.reason: 'copy-too-large'`); UploadPartCopy would lift that limit.
 *
 * Credentials and the endpoint come from the server's configuration and environment
 * ({@link createS3Client}); they are never taken from a request. Every SDK error is
 * translated where it enters ({@link translateS3Error}): the message names the operation
 * and the backend-relative path only, never the bucket, a key outside the path, or the
 * SDK's own text; an unreachable or slow endpoint is STORAGE_UNAVAILABLE after bounded
 * timeouts and retries.
 */
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  UploadPartCommand,
  type CompletedPart,
  type ListObjectsV2CommandOutput,
} from '@aws-sdk/client-s3';
import { TachyonError } from '../core/errors.js';
import {
  CoverageSet,
  baseName,
  checkChunk,
  checkMtime,
  checkRange,
  checkSize,
  incomplete,
  normalizeStoragePath,
  pageEntries,
  parentOf,
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

const MiB = 1024 * 1024;
/** S3's smallest part (all but the last). */
export const S3_MIN_PART_BYTES = 5 * MiB;
/** S3's largest part and largest single CopyObject. */
export const S3_MAX_COPY_BYTES = 5 * 1024 * MiB;
/** S3 allows at most 10,000 parts per upload. */
export const S3_MAX_PARTS = 10_000;
/** Objects up to this size are read whole when opened. */
export const SNAPSHOT_BYTES = MiB;
/** The metadata key (x-amz-meta-mtime) holding a file's mtime in ms since the epoch. */
export const MTIME_METADATA = 'mtime';

// ---------------------------------------------------------------------------------------
// s3:// URLs

export interface S3Location {
  readonly bucket: string;
  /** Normalized key prefix without leading or trailing '/' ('' for the whole bucket). */
  readonly prefix: string;
}

function badUrl(text: string, reason: string): TachyonError {
  return new TachyonError('CONFIG', `bad S3 URL (${reason}): ${JSON.stringify(String(text).slice(0, 200))}`, {
    details: { reason },
    publicMessage: 'The storage location is invalid.',
  });
}

/**
 * Parses `s3://bucket[/prefix]`. The bucket follows S3's naming rules (3-63 characters of
 * lowercase letters, digits, '.' and '-', starting and ending with a letter or digit, no
 * '..', not an IP address); the prefix passes {@link normalizeStoragePath} (no '.', '..',
 * control characters, backslashes or reserved names). No user, port, query or fragment.
 * Anything else is CONFIG with `details.reason`.
 */
export function parseS3Url(text: unknown): S3Location {
  if (typeof text !== 'string') throw badUrl(String(text), 'not-a-string');
  if (text.length > 5000) throw badUrl(text, 'too-long');
  const m = /^s3:\/\/([^/]*)(\/.*)?$/su.exec(text);
  if (m === null) throw badUrl(text, 'not-s3-url');
  const bucket = m[1] as string;
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/u.test(bucket) || bucket.includes('..') || /^\d+\.\d+\.\d+\.\d+$/u.test(bucket)) {
    throw badUrl(text, 'bad-bucket');
  }
  const rest = m[2] ?? '';
  if (/[?#%]/u.test(rest)) throw badUrl(text, 'bad-prefix');
  let prefix: string;
  try {
    prefix = normalizeStoragePath(rest);
  } catch {
    throw badUrl(text, 'bad-prefix');
  }
  return { bucket, prefix };
}

export function formatS3Url(loc: S3Location): string {
  return `s3://${loc.bucket}${loc.prefix === '' ? '' : `/${loc.prefix}`}`;
}

// ---------------------------------------------------------------------------------------
// the client

/** How to reach the S3 service; credentials normally come from the environment. */
export interface S3ConnectionConfig {
  /** e.g. https://s3.eu-west-1.amazonaws.com or http://127.0.0.1:4568; default AWS's. */
  readonly endpoint?: string;
  /** Default: AWS_REGION, else 'us-east-1'. */
  readonly region?: string;
  /** Path-style URLs (http://host/bucket/key), needed by most S3-compatible servers. */
  readonly forcePathStyle?: boolean;
  /**
   * Explicit credentials (tests, or values the server read from its own environment).
   * Absent: the SDK's default chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
   * AWS_SESSION_TOKEN, shared config, instance role).
   */
  readonly credentials?: { readonly accessKeyId: string; readonly secretAccessKey: string; readonly sessionToken?: string };
  /** TCP connect timeout per attempt (default 5,000 ms). */
  readonly connectTimeoutMs?: number;
  /** Socket idle timeout per attempt (default 30,000 ms). */
  readonly requestTimeoutMs?: number;
  /** Attempts per request including the first (default 3). */
  readonly maxAttempts?: number;
}

/** Builds an S3Client from configuration: bounded timeouts, bounded retries, checksums only when required. */
export function createS3Client(config: S3ConnectionConfig = {}, env: NodeJS.ProcessEnv = process.env): S3Client {
  return new S3Client({
    ...(config.endpoint !== undefined ? { endpoint: config.endpoint } : {}),
    region: config.region ?? env['AWS_REGION'] ?? env['AWS_DEFAULT_REGION'] ?? 'us-east-1',
    forcePathStyle: config.forcePathStyle ?? false,
    ...(config.credentials !== undefined ? { credentials: { ...config.credentials } } : {}),
    maxAttempts: config.maxAttempts ?? 3,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      connectionTimeout: config.connectTimeoutMs ?? 5_000,
      requestTimeout: config.requestTimeoutMs ?? 30_000,
      throwOnRequestTimeout: true,
    },
  });
}

// ---------------------------------------------------------------------------------------
// errors

interface SdkErrorShape {
  name?: string;
  code?: string;
  $metadata?: { httpStatusCode?: number };
}

const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE', 'ECONNABORTED']);

/** The HTTP status of an SDK error, if it got that far. */
function statusOf(err: unknown): number | undefined {
  return (err as SdkErrorShape | undefined)?.$metadata?.httpStatusCode;
}

function isNotFound(err: unknown): boolean {
  const e = err as SdkErrorShape | undefined;
  return e?.name === 'NotFound' || e?.name === 'NoSuchKey' || statusOf(err) === 404 && e?.name !== 'NoSuchBucket' && e?.name !== 'NoSuchUpload';
}

/**
 * Translates an SDK error into a TachyonError. The message names the operation and the
 * backend-relative path; the SDK's text (which can hold the bucket, keys or request ids)
 * is not copied, and the SDK error is not kept as `cause`.
 */
export function translateS3Error(err: unknown, op: string, path: string): TachyonError {
  if (err instanceof TachyonError) return err;
  const e = err as SdkErrorShape | undefined;
  const name = typeof e?.name === 'string' ? e.name.slice(0, 60) : 'Error';
  const code = typeof e?.code === 'string' ? e.code : undefined;
  const status = statusOf(err);
  const details: Record<string, unknown> = { op, s3Error: name, ...(status !== undefined ? { httpStatus: status } : {}) };
  const where = `s3 ${op} ${JSON.stringify(path)}`;
  if (isNotFound(err)) {
    return new TachyonError('NOT_FOUND', `${where}: not found`, { details, publicMessage: 'No such file or directory.' });
  }
  if (status === 412 || name === 'PreconditionFailed') return new TachyonError('EXISTS', `${where}: exists (precondition failed)`, { details });
  if (
    status === 403 ||
    name === 'AccessDenied' ||
    name === 'InvalidAccessKeyId' ||
    name === 'SignatureDoesNotMatch' ||
    name === 'ExpiredToken' ||
    name === 'CredentialsProviderError'
  ) {
    return new TachyonError('PERMISSION', `${where}: the storage service refused the request (${name})`, { details });
  }
  if (name === 'NoSuchBucket') {
    return new TachyonError('STORAGE_UNAVAILABLE', `${where}: the bucket does not exist`, { details: { ...details, reason: 'no-such-bucket' } });
  }
  if (
    (code !== undefined && NETWORK_CODES.has(code)) ||
    name === 'TimeoutError' ||
    name === 'RequestTimeout' ||
    name === 'AbortError' ||
    name === 'ServiceUnavailable' ||
    name === 'SlowDown' ||
    name === 'InternalError' ||
    (status !== undefined && status >= 500) ||
    status === undefined
  ) {
    return new TachyonError('STORAGE_UNAVAILABLE', `${where}: the storage service is unreachable or failing (${code ?? name})`, {
      details: { ...details, ...(code !== undefined ? { errno: code } : {}) },
    });
  }
  return new TachyonError('IO', `${where}: the storage service answered ${name}${status !== undefined ? ` (HTTP ${status})` : ''}`, { details });
}

// ---------------------------------------------------------------------------------------
// the backend

export interface S3StorageOptions {
  readonly client: S3Client;
  /** Where the backend's root is: a parsed location or an `s3://bucket/prefix` URL. */
  readonly location: S3Location | string;
  /** Multipart part size (default 8 MiB; at least {@link S3_MIN_PART_BYTES}). */
  readonly partBytes?: number;
  /** Parts uploaded concurrently per writer (default 4). */
  readonly maxUploadsInFlight?: number;
  /** Partly filled parts a writer buffers at most (default 16). */
  readonly maxOpenParts?: number;
  /** Send If-None-Match: * on no-clobber commits (default true). */
  readonly conditionalWrites?: boolean;
  /** ms since the epoch (default Date.now). */
  readonly now?: () => number;
}

interface Head {
  readonly size: number;
  readonly mtimeMs: number;
  readonly etag: string | undefined;
}

function mtimeFrom(metadata: Record<string, string> | undefined, lastModified: Date | undefined, fallback: number): number {
  const raw = metadata?.[MTIME_METADATA];
  if (raw !== undefined && /^\d{1,16}(\.\d{1,6})?$/u.test(raw)) return Number(raw);
  return lastModified?.getTime() ?? fallback;
}

function notFound(path: string): TachyonError {
  return new TachyonError('NOT_FOUND', `no such file or directory: ${path}`, { publicMessage: 'No such file or directory.' });
}

export class S3Storage implements StorageBackend {
  readonly capabilities: StorageCapabilities;
  readonly location: S3Location;
  private readonly client: S3Client;
  private readonly bucket: string;
  private readonly root: string; // '' or 'prefix/'
  private readonly partBytes: number;
  private readonly maxUploadsInFlight: number;
  private readonly maxOpenParts: number;
  private readonly conditionalWrites: boolean;
  private readonly now: () => number;
  /** The root has no object of its own: its mtime is when this backend was made. */
  private readonly rootMtimeMs: number;

  constructor(options: S3StorageOptions) {
    this.location = typeof options.location === 'string' ? parseS3Url(options.location) : parseS3Url(formatS3Url(options.location));
    this.client = options.client;
    this.bucket = this.location.bucket;
    this.root = this.location.prefix === '' ? '' : `${this.location.prefix}/`;
    this.partBytes = options.partBytes ?? 8 * MiB;
    this.maxUploadsInFlight = options.maxUploadsInFlight ?? 4;
    this.maxOpenParts = options.maxOpenParts ?? 16;
    this.conditionalWrites = options.conditionalWrites ?? true;
    this.now = options.now ?? Date.now;
    this.rootMtimeMs = this.now();
    if (!Number.isSafeInteger(this.partBytes) || this.partBytes < S3_MIN_PART_BYTES || this.partBytes > S3_MAX_COPY_BYTES) {
      throw new TachyonError('CONFIG', `S3 part size ${String(this.partBytes)} outside [5 MiB, 5 GiB]`);
    }
    for (const [k, v] of [['maxUploadsInFlight', this.maxUploadsInFlight], ['maxOpenParts', this.maxOpenParts]] as const) {
      if (!Number.isSafeInteger(v) || v < 1 || v > 1000) throw new TachyonError('CONFIG', `S3 ${k} ${String(v)} outside [1, 1000]`);
    }
    this.capabilities = { rangedReads: true, outOfOrderWrites: true, atomicRename: false, multipartMinPartBytes: this.partBytes };
  }

  /** The bound on one writer's buffered bytes: (open parts + uploads in flight) × part size. */
  get writerMemoryBound(): number {
    return (this.maxOpenParts + this.maxUploadsInFlight) * this.partBytes;
  }

  private key(p: string): string {
    return this.root + p;
  }

  private dirPrefix(p: string): string {
    return p === '' ? this.root : `${this.root}${p}/`;
  }

  private async send<T>(op: string, path: string, run: () => Promise<T>): Promise<T> {
    try {
      return await run();
    } catch (err) {
      throw translateS3Error(err, op, path);
    }
  }

  /** HeadObject of a file; undefined when there is none. */
  private async head(p: string): Promise<Head | undefined> {
    if (p === '') return undefined;
    try {
      const out = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.key(p) }));
      return { size: out.ContentLength ?? 0, mtimeMs: mtimeFrom(out.Metadata, out.LastModified, this.now()), etag: out.ETag };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw translateS3Error(err, 'stat', p);
    }
  }

  /** Whether a directory exists at `p` (its marker or anything below it); its mtime if known. */
  private async dirInfo(p: string): Promise<{ mtimeMs: number } | undefined> {
    if (p === '') return { mtimeMs: this.rootMtimeMs };
    const out = await this.send('stat', p, () =>
      this.client.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.dirPrefix(p), MaxKeys: 1 })),
    );
    const first = out.Contents?.[0];
    if (first === undefined) return undefined;
    return { mtimeMs: first.LastModified?.getTime() ?? this.now() };
  }

  private async requireDir(p: string): Promise<void> {
    if (p === '') return;
    if ((await this.head(p)) !== undefined) throw notFound(p); // a file in the way
    if ((await this.dirInfo(p)) === undefined) throw notFound(p);
  }

  async stat(path: string): Promise<StorageEntry> {
    const p = normalizeStoragePath(path);
    const file = await this.head(p);
    if (file !== undefined) return { name: baseName(p), path: p, kind: 'file', size: file.size, mtimeMs: file.mtimeMs };
    const dir = await this.dirInfo(p);
    if (dir === undefined) throw notFound(p);
    return { name: baseName(p), path: p, kind: 'directory', size: 0, mtimeMs: dir.mtimeMs };
  }

  /** Every key (and, with a delimiter, common prefix) below `prefix`, all pages. */
  private async *listAll(prefix: string, delimiter: boolean, path: string): AsyncGenerator<ListObjectsV2CommandOutput> {
    let token: string | undefined;
    do {
      const out: ListObjectsV2CommandOutput = await this.send('list', path, () =>
        this.client.send(
          new ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: prefix,
            ...(delimiter ? { Delimiter: '/' } : {}),
            ...(token !== undefined ? { ContinuationToken: token } : {}),
          }),
        ),
      );
      yield out;
      token = out.IsTruncated === true ? out.NextContinuationToken : undefined;
    } while (token !== undefined);
  }

  /** A listed name is shown only if it is a valid single path component. */
  private static validName(name: string): boolean {
    if (name === '' || name.includes('/')) return false;
    try {
      return normalizeStoragePath(name) === name;
    } catch {
      return false;
    }
  }

  async list(dir: string, options?: ListOptions): Promise<ListPage> {
    const d = normalizeStoragePath(dir);
    await this.requireDir(d);
    const prefix = this.dirPrefix(d);
    const entries = new Map<string, StorageEntry>();
    const dirs: string[] = [];
    for await (const page of this.listAll(prefix, true, d)) {
      for (const obj of page.Contents ?? []) {
        const name = (obj.Key ?? '').slice(prefix.length);
        if (!S3Storage.validName(name)) continue; // the directory's own marker, or a foreign key
        const path = d === '' ? name : `${d}/${name}`;
        entries.set(name, { name, path, kind: 'file', size: obj.Size ?? 0, mtimeMs: obj.LastModified?.getTime() ?? 0 });
      }
      for (const cp of page.CommonPrefixes ?? []) {
        const name = (cp.Prefix ?? '').slice(prefix.length, -1);
        if (S3Storage.validName(name)) dirs.push(name);
      }
    }
    for (const name of dirs) {
      if (entries.has(name)) continue; // a file and a prefix of the same name: the file wins, as in stat
      entries.set(name, { name, path: d === '' ? name : `${d}/${name}`, kind: 'directory', size: 0, mtimeMs: 0 });
    }
    return pageEntries([...entries.values()], options);
  }

  async openRead(path: string): Promise<ReadHandle> {
    const p = normalizeStoragePath(path);
    if (p === '') throw new TachyonError('IS_DIRECTORY', 'the root is a directory');
    const file = await this.head(p);
    if (file === undefined) {
      if ((await this.dirInfo(p)) !== undefined) throw new TachyonError('IS_DIRECTORY', `is a directory: ${p}`);
      throw notFound(p);
    }
    let closed = false;
    const check = (offset: number, length: number): void => {
      if (closed) throw new TachyonError('INTERNAL', `read of ${p} after close`);
      checkRange(p, offset, length);
    };
    if (file.size <= SNAPSHOT_BYTES) {
      const data = file.size === 0 ? Buffer.alloc(0) : await this.getRange(p, 0, file.size, file.etag);
      return {
        size: data.length,
        read: async (offset, length) => {
          check(offset, length);
          return Buffer.from(data.subarray(Math.min(offset, data.length), Math.min(offset + length, data.length)));
        },
        close: async () => {
          closed = true;
        },
      };
    }
    return {
      size: file.size,
      read: async (offset, length) => {
        check(offset, length);
        const end = Math.min(offset + length, file.size);
        if (end <= offset) return Buffer.alloc(0);
        return this.getRange(p, offset, end - offset, file.etag);
      },
      close: async () => {
        closed = true;
      },
    };
  }

  private async getRange(p: string, offset: number, length: number, etag: string | undefined): Promise<Buffer> {
    try {
      const out = await this.client.send(
        new GetObjectCommand({
          Bucket: this.bucket,
          Key: this.key(p),
          Range: `bytes=${offset}-${offset + length - 1}`,
          ...(etag !== undefined ? { IfMatch: etag } : {}),
        }),
      );
      if (out.Body === undefined) return Buffer.alloc(0);
      const bytes = Buffer.from(await out.Body.transformToByteArray());
      return bytes.length > length ? bytes.subarray(0, length) : bytes;
    } catch (err) {
      if (statusOf(err) === 412) {
        throw new TachyonError('IO', `read of ${p}: the object changed while open`, { details: { reason: 'changed' } });
      }
      if (isNotFound(err)) {
        throw new TachyonError('IO', `read of ${p}: the object was removed while open`, { details: { reason: 'changed' } });
      }
      throw translateS3Error(err, 'read', p);
    }
  }

  private async checkTarget(p: string, overwrite: boolean): Promise<void> {
    if (p === '') throw new TachyonError('IS_DIRECTORY', 'the root is a directory');
    await this.requireDir(parentOf(p));
    const file = await this.head(p);
    if (file === undefined && (await this.dirInfo(p)) !== undefined) throw new TachyonError('IS_DIRECTORY', `is a directory: ${p}`);
    if (file !== undefined && !overwrite) throw new TachyonError('EXISTS', `exists: ${p}`);
  }

  async createWriter(path: string, size: number, options: WriterOptions = {}): Promise<ChunkWriter> {
    const p = normalizeStoragePath(path);
    checkSize(p, size);
    checkMtime(p, options.mtimeMs);
    const overwrite = options.overwrite === true;
    await this.checkTarget(p, overwrite);
    if (Math.ceil(size / this.partBytes) > S3_MAX_PARTS) {
      throw new TachyonError('USAGE', `writer for ${p}: ${size} bytes need more than ${S3_MAX_PARTS} parts of ${this.partBytes}`);
    }
    return new S3Writer(this, p, size, overwrite, options.mtimeMs);
  }

  /** @internal what S3Writer needs */
  get internals(): WriterContext {
    return {
      client: this.client,
      bucket: this.bucket,
      key: (p) => this.key(p),
      partBytes: this.partBytes,
      maxUploadsInFlight: this.maxUploadsInFlight,
      maxOpenParts: this.maxOpenParts,
      conditionalWrites: this.conditionalWrites,
      now: this.now,
      checkTarget: (p, o) => this.checkTarget(p, o),
    };
  }

  async mkdir(path: string, options: { readonly recursive?: boolean } = {}): Promise<void> {
    const p = normalizeStoragePath(path);
    if (p === '') throw new TachyonError('EXISTS', 'exists: /');
    if ((await this.head(p)) !== undefined || (await this.dirInfo(p)) !== undefined) throw new TachyonError('EXISTS', `exists: ${p}`);
    const parts = p.split('/');
    for (let i = 1; i < parts.length; i++) {
      const prefix = parts.slice(0, i).join('/');
      if ((await this.head(prefix)) !== undefined) throw notFound(prefix); // a file in the way
      if ((await this.dirInfo(prefix)) !== undefined) continue;
      if (options.recursive !== true) throw notFound(prefix);
      await this.putMarker(prefix);
    }
    await this.putMarker(p);
  }

  private async putMarker(p: string): Promise<void> {
    await this.send('mkdir', p, () => this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.dirPrefix(p), Body: new Uint8Array(0) })));
  }

  /** Every key at or below directory `p` (its marker included). */
  private async keysBelow(p: string): Promise<Array<{ key: string; size: number }>> {
    const out: Array<{ key: string; size: number }> = [];
    for await (const page of this.listAll(this.dirPrefix(p), false, p)) {
      for (const obj of page.Contents ?? []) if (obj.Key !== undefined) out.push({ key: obj.Key, size: obj.Size ?? 0 });
    }
    return out;
  }

  private async copy(fromKey: string, toKey: string, size: number, path: string): Promise<void> {
    if (size > S3_MAX_COPY_BYTES) {
      throw new TachyonError('IO', `rename of ${path}: objects over 5 GiB need UploadPartCopy, which is not implemented`, {
        details: { reason: 'copy-too-large' },
      });
    }
    const source = `${this.bucket}/${fromKey.split('/').map(encodeURIComponent).join('/')}`;
    await this.send('rename', path, () =>
      this.client.send(new CopyObjectCommand({ Bucket: this.bucket, Key: toKey, CopySource: source, MetadataDirective: 'COPY' })),
    );
  }

  async rename(from: string, to: string, options: { readonly overwrite?: boolean } = {}): Promise<void> {
    const f = normalizeStoragePath(from);
    const t = normalizeStoragePath(to);
    if (f === '' || t === '') throw new TachyonError('PERMISSION', 'the root cannot be renamed or replaced');
    const src = await this.stat(f);
    if (t === f) return;
    if (t.startsWith(`${f}/`)) {
      throw new TachyonError('PATH_INVALID', `cannot move ${f} into itself`, { details: { reason: 'into-itself' } });
    }
    await this.requireDir(parentOf(t));
    const dest = await this.stat(t).catch((err: unknown) => {
      if (err instanceof TachyonError && err.code === 'NOT_FOUND') return undefined;
      throw err;
    });
    if (dest !== undefined && !(options.overwrite === true && dest.kind === 'file' && src.kind === 'file')) {
      throw new TachyonError(dest.kind === 'directory' ? 'IS_DIRECTORY' : 'EXISTS', `exists: ${t}`);
    }
    if (src.kind === 'file') {
      await this.copy(this.key(f), this.key(t), src.size, f);
      await this.send('rename', f, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(f) })));
      return;
    }
    const fromPrefix = this.dirPrefix(f);
    const toPrefix = this.dirPrefix(t);
    const keys = await this.keysBelow(f);
    for (const k of keys) await this.copy(k.key, toPrefix + k.key.slice(fromPrefix.length), k.size, f);
    await this.deleteKeys(keys.map((k) => k.key), f);
  }

  private async deleteKeys(keys: string[], path: string): Promise<void> {
    for (let i = 0; i < keys.length; i += 1000) {
      const batch = keys.slice(i, i + 1000);
      const out = await this.send('remove', path, () =>
        this.client.send(new DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: batch.map((Key) => ({ Key })), Quiet: true } })),
      );
      if ((out.Errors?.length ?? 0) > 0) {
        throw new TachyonError('IO', `remove of ${path}: ${out.Errors?.length} objects could not be deleted`, { details: { reason: 'partial-delete' } });
      }
    }
  }

  async remove(path: string, options: { readonly recursive?: boolean } = {}): Promise<void> {
    const p = normalizeStoragePath(path);
    if (p === '') throw new TachyonError('PERMISSION', 'the root cannot be removed');
    if ((await this.head(p)) !== undefined) {
      await this.send('remove', p, () => this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.key(p) })));
      return;
    }
    const keys = await this.keysBelow(p);
    if (keys.length === 0) throw notFound(p);
    const marker = this.dirPrefix(p);
    if (keys.some((k) => k.key !== marker) && options.recursive !== true) {
      throw new TachyonError('IS_DIRECTORY', `directory not empty: ${p}`, { details: { reason: 'not-empty' } });
    }
    await this.deleteKeys(
      keys.map((k) => k.key),
      p,
    );
  }
}

// ---------------------------------------------------------------------------------------
// the writer

interface WriterContext {
  readonly client: S3Client;
  readonly bucket: string;
  readonly key: (p: string) => string;
  readonly partBytes: number;
  readonly maxUploadsInFlight: number;
  readonly maxOpenParts: number;
  readonly conditionalWrites: boolean;
  readonly now: () => number;
  readonly checkTarget: (p: string, overwrite: boolean) => Promise<void>;
}

interface OpenPart {
  readonly buf: Buffer;
  readonly coverage: CoverageSet;
}

class S3Writer implements ChunkWriter {
  readonly path: string;
  readonly size: number;
  private readonly s: WriterContext;
  private readonly overwrite: boolean;
  private readonly mtimeMs: number | undefined;
  private readonly multipart: boolean;
  private readonly partCount: number;
  private readonly coverage = new CoverageSet();
  private readonly open = new Map<number, OpenPart>();
  private readonly done = new Map<number, string>(); // part number → ETag
  private readonly inFlight = new Map<number, Promise<void>>();
  /** complete parts waiting for an upload slot */
  private readonly waiting = new Map<number, OpenPart>();
  private uploadId: Promise<string> | undefined;
  private failure: TachyonError | undefined;
  private state: 'open' | 'committing' | 'committed' | 'aborted' = 'open';
  /** The whole file, for a single-PutObject writer. */
  private single: Buffer | undefined;

  constructor(storage: S3Storage, path: string, size: number, overwrite: boolean, mtimeMs: number | undefined) {
    this.s = storage.internals;
    this.path = path;
    this.size = size;
    this.overwrite = overwrite;
    this.mtimeMs = mtimeMs;
    this.multipart = size > this.s.partBytes;
    this.partCount = Math.max(1, Math.ceil(size / this.s.partBytes));
  }

  private metadata(): Record<string, string> {
    return { [MTIME_METADATA]: String(this.mtimeMs ?? this.s.now()) };
  }

  private partRange(n: number): [number, number] {
    const start = (n - 1) * this.s.partBytes;
    return [start, Math.min(start + this.s.partBytes, this.size)];
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    if (this.state !== 'open') throw writerClosed(this.path, this.state);
    if (this.failure !== undefined) throw this.failure;
    checkChunk(this.path, this.size, offset, data.length);
    if (data.length === 0) return;
    if (!this.multipart) {
      this.single ??= Buffer.alloc(this.size);
      this.single.set(data, offset);
      this.coverage.add(offset, offset + data.length);
      return;
    }
    const P = this.s.partBytes;
    const first = Math.floor(offset / P) + 1;
    const last = Math.floor((offset + data.length - 1) / P) + 1;
    // refuse before buffering anything, so that a refused chunk changes nothing
    let newParts = 0;
    for (let n = first; n <= last; n++) if (!this.open.has(n) && !this.sent(n)) newParts++;
    if (this.open.size + this.waiting.size + newParts > this.s.maxOpenParts) {
      throw new TachyonError('DISK_FULL', `writer for ${this.path}: more than ${this.s.maxOpenParts} parts buffered`, {
        details: { reason: 'buffer-limit' },
      });
    }
    for (let n = first; n <= last; n++) {
      if (this.sent(n)) continue; // a retransmission of a part already complete
      const [start, end] = this.partRange(n);
      const from = Math.max(offset, start);
      const to = Math.min(offset + data.length, end);
      let part = this.open.get(n);
      if (part === undefined) {
        part = { buf: Buffer.alloc(end - start), coverage: new CoverageSet() };
        this.open.set(n, part);
      }
      part.buf.set(data.subarray(from - offset, to - offset), from - start);
      part.coverage.add(from - start, to - start);
      if (part.coverage.covers(end - start)) {
        this.open.delete(n);
        this.waiting.set(n, part);
      }
    }
    this.coverage.add(offset, offset + data.length);
    this.pump();
    // backpressure: a caller that awaits its writes waits while complete parts queue for a slot
    while (this.waiting.size > 0 && this.inFlight.size > 0 && this.failure === undefined) await Promise.race(this.inFlight.values());
    if (this.failure !== undefined) throw this.failure;
  }

  /** Part `n` is complete: waiting, being uploaded or uploaded. */
  private sent(n: number): boolean {
    return this.waiting.has(n) || this.inFlight.has(n) || this.done.has(n);
  }

  /** Starts uploads of waiting parts while there are free slots (lowest part first). */
  private pump(): void {
    while (this.failure === undefined && this.waiting.size > 0 && this.inFlight.size < this.s.maxUploadsInFlight) {
      this.startPart(Math.min(...this.waiting.keys()));
    }
  }

  private ensureUpload(): Promise<string> {
    this.uploadId ??= (async () => {
      try {
        const out = await this.s.client.send(
          new CreateMultipartUploadCommand({ Bucket: this.s.bucket, Key: this.s.key(this.path), Metadata: this.metadata() }),
        );
        if (out.UploadId === undefined) throw new TachyonError('IO', `upload of ${this.path}: no upload id`);
        return out.UploadId;
      } catch (err) {
        throw translateS3Error(err, 'write', this.path);
      }
    })();
    return this.uploadId;
  }

  private startPart(n: number): void {
    const part = this.waiting.get(n);
    if (part === undefined) return;
    this.waiting.delete(n);
    const run = (async () => {
      try {
        const uploadId = await this.ensureUpload();
        const out = await this.s.client.send(
          new UploadPartCommand({ Bucket: this.s.bucket, Key: this.s.key(this.path), UploadId: uploadId, PartNumber: n, Body: part.buf }),
        );
        if (out.ETag === undefined) throw new TachyonError('IO', `upload of ${this.path}: part ${n} without an ETag`);
        this.done.set(n, out.ETag);
      } catch (err) {
        this.fail(translateS3Error(err, 'write', this.path));
      } finally {
        this.inFlight.delete(n);
        this.pump();
      }
    })();
    this.inFlight.set(n, run);
  }

  /** The first failure wins; the upload is aborted so that no part lingers. */
  private fail(err: TachyonError): void {
    if (this.failure !== undefined) return;
    this.failure = err;
    void this.discard();
  }

  /** Waits until every complete part is uploaded (or, after a failure, until nothing is in flight). */
  private async drain(): Promise<void> {
    this.pump();
    while (this.inFlight.size > 0) {
      await Promise.all([...this.inFlight.values()]);
      this.pump();
    }
  }

  /** Frees the buffers and aborts the multipart upload, if one was started (errors ignored). */
  private async discard(): Promise<void> {
    this.open.clear();
    this.waiting.clear();
    this.single = undefined;
    await this.drain();
    if (this.uploadId === undefined) return;
    const id = await this.uploadId.catch(() => undefined);
    if (id === undefined) return;
    await this.s.client
      .send(new AbortMultipartUploadCommand({ Bucket: this.s.bucket, Key: this.s.key(this.path), UploadId: id }))
      .catch(() => undefined);
  }

  async commit(): Promise<void> {
    if (this.state !== 'open') throw writerClosed(this.path, this.state);
    if (this.failure !== undefined) {
      this.state = 'aborted';
      throw this.failure;
    }
    if (!this.coverage.covers(this.size)) throw incomplete(this.path);
    this.state = 'committing';
    try {
      const key = this.s.key(this.path);
      const condition = !this.overwrite && this.s.conditionalWrites ? { IfNoneMatch: '*' } : {};
      if (!this.multipart) {
        await this.s.checkTarget(this.path, this.overwrite);
        const body = this.single ?? Buffer.alloc(0);
        await this.s.client
          .send(new PutObjectCommand({ Bucket: this.s.bucket, Key: key, Body: body, Metadata: this.metadata(), ...condition }))
          .catch((err: unknown) => {
            throw translateS3Error(err, 'write', this.path);
          });
        this.single = undefined;
      } else {
        await this.drain();
        if (this.failure !== undefined) throw this.failure;
        await this.s.checkTarget(this.path, this.overwrite);
        const uploadId = await this.ensureUpload();
        const parts: CompletedPart[] = [];
        for (let n = 1; n <= this.partCount; n++) {
          const etag = this.done.get(n);
          if (etag === undefined) throw new TachyonError('INTERNAL', `upload of ${this.path}: part ${n} missing at commit`);
          parts.push({ PartNumber: n, ETag: etag });
        }
        await this.s.client
          .send(
            new CompleteMultipartUploadCommand({
              Bucket: this.s.bucket,
              Key: key,
              UploadId: uploadId,
              MultipartUpload: { Parts: parts },
              ...condition,
            }),
          )
          .catch((err: unknown) => {
            throw translateS3Error(err, 'write', this.path);
          });
      }
      this.state = 'committed';
    } catch (err) {
      this.state = 'aborted';
      await this.discard();
      throw err instanceof TachyonError ? err : translateS3Error(err, 'write', this.path);
    }
  }

  async abort(): Promise<void> {
    if (this.state === 'committed' || this.state === 'aborted') return;
    this.state = 'aborted';
    await this.discard();
  }
}
