/**
 * A real S3-compatible server for tests: s3rver (npm) on 127.0.0.1, port 0, storing into a
 * fresh temporary directory. s3rver 3.7 answers AbortMultipartUpload and
 * ListMultipartUploads with NotImplemented / MethodNotAllowed, so this helper serves those
 * two requests itself from s3rver's own upload directories (`<bucket>/._S3rver_uploads/<id>`)
 * and hands every other request to s3rver unchanged. Credentials: S3RVER / S3RVER.
 */
import nodeCrypto from 'node:crypto';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createS3Client, type S3ConnectionConfig } from '../../src/storage/s3.js';
import type { S3Client } from '@aws-sdk/client-s3';

interface S3rverInstance {
  configureBuckets(): Promise<void>;
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
}
type S3rverCtor = new (options: Record<string, unknown>) => S3rverInstance;

const require = createRequire(import.meta.url);

export const S3RVER_CREDENTIALS = { accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' } as const;

export interface S3rverFixture {
  readonly endpoint: string;
  readonly port: number;
  readonly directory: string;
  readonly buckets: readonly string[];
  /** Connection settings for this server (path style, S3RVER credentials, short timeouts). */
  readonly connection: S3ConnectionConfig;
  client(): S3Client;
  /** Upload ids of multipart uploads neither completed nor aborted, in `bucket`. */
  pendingUploads(bucket: string): Promise<Array<{ key: string; uploadId: string }>>;
  close(): Promise<void>;
}

const UPLOADS_DIR = '._S3rver_uploads';

let desPatched = false;
/**
 * s3rver 3.7 makes ListObjectsV2 continuation tokens with single DES, which OpenSSL 3 has
 * moved to its legacy provider, so every truncated listing fails (InternalError). In this
 * test process only, 'des' is mapped to two-key 3DES-CBC (same 8-byte block and IV), which
 * keeps the tokens opaque and reversible.
 */
function patchDesForS3rver(): void {
  if (desPatched) return;
  desPatched = true;
  const c = nodeCrypto;
  const cipher = c.createCipheriv.bind(c);
  const decipher = c.createDecipheriv.bind(c);
  const twoKey = (key: unknown): Buffer => {
    const k = Buffer.from(key as Uint8Array);
    return Buffer.concat([k, k]);
  };
  c.createCipheriv = ((alg: string, key: never, iv: never, opts?: never) =>
    alg === 'des' ? cipher('des-ede-cbc', twoKey(key), iv, opts) : cipher(alg, key, iv, opts)) as typeof c.createCipheriv;
  c.createDecipheriv = ((alg: string, key: never, iv: never, opts?: never) =>
    alg === 'des' ? decipher('des-ede-cbc', twoKey(key), iv, opts) : decipher(alg, key, iv, opts)) as typeof c.createDecipheriv;
}

function xmlEscape(s: string): string {
  return s.replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

export async function startS3rver(buckets: readonly string[] = ['tachyon-test']): Promise<S3rverFixture> {
  patchDesForS3rver();
  const S3rver = require('s3rver') as S3rverCtor;
  const directory = await mkdtemp(join(tmpdir(), 'tachyon-s3rver-'));
  const s3rver = new S3rver({ directory, silent: true, configureBuckets: buckets.map((name) => ({ name })) });
  await s3rver.configureBuckets();
  const handle = s3rver.callback();

  const pendingUploads = async (bucket: string): Promise<Array<{ key: string; uploadId: string }>> => {
    const dir = join(directory, bucket, UPLOADS_DIR);
    const ids = await readdir(dir).catch(() => [] as string[]);
    const out: Array<{ key: string; uploadId: string }> = [];
    for (const uploadId of ids) {
      const key = await readFile(join(dir, uploadId, 'key'), 'utf8').catch(() => undefined);
      if (key !== undefined) out.push({ key, uploadId });
    }
    return out;
  };

  const server: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const [, bucket = '', ...restRaw] = url.pathname.split('/');
    const rest = restRaw.filter((x) => x !== '');
    const uploadId = url.searchParams.get('uploadId');
    if (req.method === 'DELETE' && uploadId !== null && rest.length > 0 && /^[0-9a-f]+$/u.test(uploadId)) {
      // AbortMultipartUpload
      const dir = join(directory, decodeURIComponent(bucket), UPLOADS_DIR, uploadId);
      readdir(dir).then(
        () => rm(dir, { recursive: true, force: true }).then(() => {
          res.writeHead(204).end();
        }),
        () => {
          res.writeHead(404, { 'content-type': 'application/xml' }).end('<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.</Message></Error>');
        },
      );
      return;
    }
    if (req.method === 'GET' && url.searchParams.has('uploads') && rest.length === 0) {
      // ListMultipartUploads (no paging: tests hold few uploads)
      void pendingUploads(decodeURIComponent(bucket)).then((ups) => {
        const body = ups.map((u) => `<Upload><Key>${xmlEscape(u.key)}</Key><UploadId>${u.uploadId}</UploadId></Upload>`).join('');
        res
          .writeHead(200, { 'content-type': 'application/xml' })
          .end(`<?xml version="1.0" encoding="UTF-8"?><ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Bucket>${xmlEscape(decodeURIComponent(bucket))}</Bucket><IsTruncated>false</IsTruncated>${body}</ListMultipartUploadsResult>`);
      });
      return;
    }
    handle(req, res);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const endpoint = `http://127.0.0.1:${port}`;
  const connection: S3ConnectionConfig = {
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { ...S3RVER_CREDENTIALS },
    connectTimeoutMs: 2_000,
    requestTimeoutMs: 10_000,
    maxAttempts: 2,
  };
  const clients: S3Client[] = [];
  return {
    endpoint,
    port,
    directory,
    buckets,
    connection,
    client: () => {
      const c = createS3Client(connection, {});
      clients.push(c);
      return c;
    },
    pendingUploads,
    close: async () => {
      for (const c of clients) c.destroy();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await rm(directory, { recursive: true, force: true });
    },
  };
}
