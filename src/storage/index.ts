/** The storage layer: the StorageBackend seam and its adapters. */
export * from './backend.js';
export { LocalStorage, translateFsError } from './local.js';
export { MemoryStorage, type MemoryStorageOptions } from './memory.js';
export { ListingCache, type ListingCacheOptions } from './list-cache.js';
export { EncryptedStorage } from './encrypted.js';
