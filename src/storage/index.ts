/** The storage layer: the StorageBackend seam and its adapters. */
export * from './backend.js';
export { LocalStorage, translateFsError } from './local.js';
export { MemoryStorage, type MemoryStorageOptions } from './memory.js';
// S3Storage lives in './s3.js' and is imported from there (not re-exported here) so that
// processes without an S3 docroot never load the AWS SDK.
export { DirListing, ListingCache, type ListingCacheOptions, type ListingTicket } from './list-cache.js';
export { defaultDirScanner, nativeDirScanner, nodeDirScanner, type DirScanner, type ScannedDir } from './dir-scan.js';
export { EncryptedStorage } from './encrypted.js';
