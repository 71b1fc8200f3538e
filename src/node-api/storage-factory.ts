/**
 * Which `StorageBackend` serves a key's storage root URL. `file://` roots are
 * `LocalStorage`; `s3://` roots go to the S3 factory the node is configured with (the S3
 * backend, src/storage/s3.ts, plugs in here: `s3: s3Opener(lazyS3Backends(…))`). Storage
 * credentials come from the node's environment or configuration, never from a caller.
 */
import { TachyonError } from '../core/errors.js';
import { EncryptedStorage, ListingCache, LocalStorage, type StorageBackend } from '../storage/index.js';
import type { KeyProvider } from '../storage/envelope/keyring.js';
import type { S3Backends } from '../storage/s3-backends.js';
import { fileUrlPath, formatStorageUrl, matchesRoot, parseStorageUrl, type RootPattern, type StorageUrl } from '../server/users/storage-roots.js';
import type { StorageFactory } from './auth.js';

export interface StorageFactoryOptions {
  /** Opens an S3 root (`s3://bucket/prefix`); without it, S3 roots are refused. */
  readonly s3?: (url: StorageUrl & { scheme: 's3' }) => Promise<StorageBackend>;
  /** Shared by the local backends it opens. Default: a new cache (1M entries, 2 s). */
  readonly listCache?: ListingCache;
  /** Server-side encryption at rest: roots under these patterns are served through `EncryptedStorage` (plaintext names, sizes and content to the caller). */
  readonly encryption?: { readonly roots: readonly RootPattern[]; readonly keys: KeyProvider };
}

export function storageFactory(o: StorageFactoryOptions = {}): StorageFactory {
  const listCache = o.listCache ?? new ListingCache();
  return async (rootUrl) => {
    const url = parseStorageUrl(rootUrl, { field: 'storage_root' });
    let backend: StorageBackend;
    if (url.scheme === 'file') backend = await LocalStorage.open(fileUrlPath(url), { listCache });
    else if (o.s3) backend = await o.s3(url);
    else throw new TachyonError('CONFIG', `no S3 backend is configured for ${rootUrl}`, { publicMessage: 'The storage of this access key is not available.' });
    const enc = o.encryption;
    return enc && enc.roots.some((r) => matchesRoot(r, url)) ? new EncryptedStorage(backend, enc.keys) : backend;
  };
}

/** The `s3` option over S3 backends opened on demand (src/storage/s3-backends.ts): one S3Storage per root. */
export function s3Opener(backends: S3Backends): NonNullable<StorageFactoryOptions['s3']> {
  return (url) => backends.open(formatStorageUrl(url));
}
