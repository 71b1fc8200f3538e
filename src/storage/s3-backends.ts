/**
 * S3 backends opened on demand, for a process that may or may not serve s3:// roots (the
 * transfer server's accounts, the node API's access keys): the AWS SDK is loaded (dynamic
 * import of ./s3.js) when the first s3:// root is opened, one S3Client is shared, and one
 * S3Storage is kept per root URL. Credentials come from the process's environment (the
 * SDK's default chain) unless `connection.credentials` is given.
 */
import type { S3Client } from '@aws-sdk/client-s3';
import type { StorageBackend } from './backend.js';
// type-only: importing ./s3.js itself would load the AWS SDK
import type { S3ConnectionConfig } from './s3.js';

export interface S3BackendsOptions {
  readonly connection: S3ConnectionConfig;
  /** Multipart part size (default 8 MiB). */
  readonly partBytes?: number;
  /** Send If-None-Match: * on no-clobber commits (default true). */
  readonly conditionalWrites?: boolean;
}

export interface S3Backends {
  /** The backend of an `s3://bucket/prefix` root (the same object for the same URL). */
  open(location: string): Promise<StorageBackend>;
  /** Releases the shared client (its sockets). */
  close(): Promise<void>;
}

export function lazyS3Backends(o: S3BackendsOptions): S3Backends {
  let loaded: Promise<{ client: S3Client; make: (url: string) => StorageBackend }> | undefined;
  const backends = new Map<string, Promise<StorageBackend>>();
  return {
    open(location) {
      let b = backends.get(location);
      if (!b) {
        loaded ??= import('./s3.js').then((m) => {
          const client = m.createS3Client(o.connection);
          return {
            client,
            make: (u: string) =>
              new m.S3Storage({
                client,
                location: u,
                ...(o.partBytes !== undefined ? { partBytes: o.partBytes } : {}),
                ...(o.conditionalWrites !== undefined ? { conditionalWrites: o.conditionalWrites } : {}),
              }),
          };
        });
        b = loaded.then(({ make }) => make(location));
        backends.set(location, b);
        b.catch(() => backends.delete(location));
      }
      return b;
    },
    async close() {
      const c = await loaded?.catch(() => undefined);
      c?.client.destroy();
    },
  };
}
