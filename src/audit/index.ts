/** The audit layer: the AuditSink seam, the hash-chained file sink, its verifier, the test sink. */
export * from './event.js';
export { REDACTED, isSecretName, isSecretValue, sanitizeFields } from './redact.js';
export { FileAuditSink, MAX_RECORD_BYTES } from './file-sink.js';
export type { AuditFsyncPolicy, FileAuditSinkOptions, FileAuditSinkStats } from './file-sink.js';
export { MemoryAuditSink } from './memory-sink.js';
export { verifyAuditLog, verifyLines, parseCheckpoint, formatCheckpoint } from './verify.js';
export { linesFromBuffer, readLastLines } from './reader.js';
export type { RawLine } from './reader.js';
export type { AuditCheckpoint, AuditVerifyOptions, AuditVerifyReason, AuditVerifyResult } from './verify.js';
export { loadAuditKey, generateAuditKeyFile, MIN_KEY_BYTES } from './key.js';
export { decodeLine, encodeLine, GENESIS } from './line.js';
export type { ChainAlg, StoredRecord } from './line.js';
