/**
 * Which `StorageBackend` serves a key's storage root URL. `file://` roots are
 * `LocalStorage`; `s3://` roots go to the S3 factory the node is configured with (the S3
 * backend, src/storage/s3.ts, plugs in here: `s3: s3Opener(lazyS3Backends(…))`). Storage
 * credentials come from the node's environment or configuration, never from a caller.
 */
import { TachyonError } from '../core/errors.js';
import { ListingCache, LocalStorage, type StorageBackend } from '../storage/index.js';
import type { S3Backends } from '../storage/s3-backends.js';
import { fileUrlPath, formatStorageUrl, parseStorageUrl, type StorageUrl } from '../server/users/storage-roots.js';
import type { StorageFactory } from './auth.js';

export interface StorageFactoryOptions {
  /** Opens an S3 root (`s3://bucket/prefix`); without it, S3 roots are refused. */
  readonly s3?: (url: StorageUrl & { scheme: 's3' }) => Promise<StorageBackend>;
  /** Shared by the local backends it opens. Default: a new cache (1M entries, 2 s). */
  readonly listCache?: ListingCache;
}

export function storageFactory(o: StorageFactoryOptions = {}): StorageFactory {
  const listCache = o.listCache ?? new ListingCache();
  return async (rootUrl) => {
    const url = parseStorageUrl(rootUrl, { field: 'storage_root' });
    if (url.scheme === 'file') return LocalStorage.open(fileUrlPath(url), { listCache });
    if (o.s3) return o.s3(url);
    throw new TachyonError('CONFIG', `no S3 backend is configured for ${rootUrl}`, { publicMessage: 'The storage of this access key is not available.' });
  };
}

/** The `s3` option over S3 backends opened on demand (src/storage/s3-backends.ts): one S3Storage per root. */
export function s3Opener(backends: S3Backends): NonNullable<StorageFactoryOptions['s3']> {
  return (url) => backends.open(formatStorageUrl(url));
}
