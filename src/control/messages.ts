/**
 * Control-channel messages, exchanged as length-prefixed JSON frames on the SSH
 * subsystem channel `tachyon-v1` (see framing.ts). Every incoming frame is validated
 * with these schemas; anything else is a PROTOCOL error.
 *
 * Roles: the SSH client opens the session with `hello`; the server answers `welcome`
 * (session id, UDP port, fresh per-direction secrets) or `error`. After that the party
 * that sends file data (the "sender": client on `send`, server on `recv`) announces
 * files; the other party (the "receiver") accepts them and reports verified results.
 */
import { z } from 'zod';

export const PROTOCOL_VERSION = 1;
export const SUBSYSTEM = 'tachyon-v1';
export const MAX_FRAME_BYTES = 1 << 20;

import { CIPHERS, POLICIES } from '../core/types.js';

export { CIPHERS, POLICIES };
export type { CipherName, RatePolicy } from '../core/types.js';

const b64 = z.string().max(256).regex(/^[A-Za-z0-9+/=]*$/);
const relPath = z.string().min(1).max(4096);
const u53 = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);

export const HelloSchema = z.strictObject({
  t: z.literal('hello'),
  v: z.number().int(),
  op: z.enum(['send', 'recv']),
  cipher: z.enum(CIPHERS),
  policy: z.enum(POLICIES),
  /** bits per second */
  targetRate: z.number().positive().max(1e12),
  minRate: z.number().min(0).max(1e12),
  /** largest UDP payload either side may send */
  datagramSize: z.number().int().min(576).max(65507),
  /** send: destination path inside the server root */
  dest: z.string().max(4096).optional(),
  /** send: true when exactly one regular file is sent (dest may name the file) */
  single: z.boolean().optional(),
  /** recv: paths inside the server root to download */
  sources: z.array(relPath).max(10000).optional(),
});

export const WelcomeSchema = z.strictObject({
  t: z.literal('welcome'),
  v: z.number().int(),
  sessionId: z.number().int().min(1).max(0xffffffff),
  udpPort: z.number().int().min(1).max(65535),
  cipher: z.enum(CIPHERS),
  datagramSize: z.number().int().min(576).max(65507),
  /** 32-byte secrets, base64: c2s protects client->server datagrams, s2c the reverse */
  keys: z.strictObject({ c2s: b64, s2c: b64 }),
  /** rate limits the server imposes (bits per second) */
  maxRate: z.number().positive().max(1e12),
});

export const FileSchema = z.strictObject({
  t: z.literal('file'),
  id: z.number().int().min(0).max(0xffffffff),
  /** relative path with '/' separators; the receiver resolves and confines it */
  path: relPath,
  size: u53,
  mtimeMs: z.number().min(0).optional(),
  /** first stream sequence number of this file's blocks */
  ssn0: u53,
});

export const DirSchema = z.strictObject({ t: z.literal('dir'), path: relPath });
export const DigestSchema = z.strictObject({ t: z.literal('digest'), id: z.number().int().min(0), sha256: sha256Hex });
export const EndSchema = z.strictObject({ t: z.literal('end'), files: u53, bytes: u53 });
export const ReadySchema = z.strictObject({ t: z.literal('ready'), id: z.number().int().min(0) });
export const ResultSchema = z.strictObject({
  t: z.literal('result'),
  id: z.number().int().min(0),
  ok: z.boolean(),
  sha256: sha256Hex.optional(),
  code: z.string().max(64).optional(),
  message: z.string().max(1024).optional(),
});
export const ErrorSchema = z.strictObject({
  t: z.literal('error'),
  code: z.string().max(64),
  message: z.string().max(1024),
  correlationId: z.string().max(64).optional(),
});
export const ByeSchema = z.strictObject({ t: z.literal('bye') });

export const ControlMessageSchema = z.discriminatedUnion('t', [
  HelloSchema,
  WelcomeSchema,
  FileSchema,
  DirSchema,
  DigestSchema,
  EndSchema,
  ReadySchema,
  ResultSchema,
  ErrorSchema,
  ByeSchema,
]);

export type Hello = z.infer<typeof HelloSchema>;
export type Welcome = z.infer<typeof WelcomeSchema>;
export type FileAnnounce = z.infer<typeof FileSchema>;
export type ControlMessage = z.infer<typeof ControlMessageSchema>;

/** A reliable, ordered, authenticated message channel between the two parties. */
export interface ControlLink {
  send(msg: ControlMessage): void;
  /** Registers the handler for every validated incoming message. */
  onMessage(handler: (msg: ControlMessage) => void): void;
  /** Called once when the link ends; err is set when it ended abnormally. */
  onClose(handler: (err?: Error) => void): void;
  close(): void;
}
