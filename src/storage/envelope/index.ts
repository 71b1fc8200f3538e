/** Tachyon's encrypted-file envelope (encryption at rest): format, keys, codec, file decryption. */
export * from './format.js';
export * from './keys.js';
export * from './segment.js';
export * from './codec.js';
export * from './file.js';
export * from './keyring.js';
