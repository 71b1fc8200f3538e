/**
 * Control-channel messages, exchanged as length-prefixed JSON frames on the SSH
 * subsystem channel `tachyon-v1` (see framing.ts). Every incoming frame is validated
 * with these schemas; anything else is a PROTOCOL error.
 *
 * Roles: the SSH client opens the session with `hello`; the server answers `welcome`
 * (session id, UDP port, fresh per-direction secrets) or `error`. After that the party
 * that sends file data (the "sender": client on `send`, server on `recv`) announces
 * files; the other party (the "receiver") reports verified results. When the receiver's
 * policy depends on what it already holds (overwrite, resume), the sender first asks
 * (`probe`) and the receiver answers with a `plan`. Per-file messages travel in batches
 * of many entries, so that many small files cost no round trip each (docs/protocol.md).
 */
import { z } from 'zod';

export const PROTOCOL_VERSION = 3;
export const SUBSYSTEM = 'tachyon-v1';
export const MAX_FRAME_BYTES = 1 << 20;
/** most entries in one batched message (`probe`, `plan`, `files`, `digests`, `results`, `dirs`) */
export const MAX_BATCH = 4096;

import { CIPHERS, OVERWRITE_POLICIES, POLICIES, RESUME_LEVELS } from '../core/types.js';

export { CIPHERS, OVERWRITE_POLICIES, POLICIES, RESUME_LEVELS };
export type { CipherName, OverwritePolicy, RatePolicy, ResumeLevel } from '../core/types.js';

const b64 = z.string().max(256).regex(/^[A-Za-z0-9+/=]*$/);
const relPath = z.string().min(1).max(4096);
const u53 = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const fileId = z.number().int().min(0).max(0xffffffff);
const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);
const timeMs = z.number().min(0).max(1e15);
const errorCode = z.string().max(64);
const errorText = z.string().max(1024);
/** a 32-byte secret, base64 */
const secret = b64.refine((k) => Buffer.from(k, 'base64').length === 32, 'a key is 32 bytes');
const batch = <T extends z.ZodType>(entry: T) => z.array(entry).min(1).max(MAX_BATCH);

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
  /** the receiver's policy for an existing destination file (default `diff`) */
  overwrite: z.enum(OVERWRITE_POLICIES).optional(),
  /** how the receiver resumes partial files and compares existing ones (default `none`) */
  resume: z.enum(RESUME_LEVELS).optional(),
  /** the receiver also sets the access time of each file to the source's */
  preserveTimes: z.boolean().optional(),
  /** send: create the destination directory (and its parents) if it is missing */
  createDir: z.boolean().optional(),
  /** recv: strip this prefix (a server path) from the sources to form destination paths */
  srcBase: z.string().min(1).max(4096).optional(),
  /** recv: exclude patterns, matched by the server against the relative paths it lists */
  exclude: z.array(z.string().min(1).max(1024)).max(256).optional(),
  /** recv: the client's destination holds nothing yet, so no file needs a plan */
  fresh: z.boolean().optional(),
  /**
   * send: the session id and 32-byte secrets (base64) the client chose, so that its data
   * can leave before `welcome` (docs/protocol.md: early data); `welcome` echoes them
   */
  early: z.strictObject({ sessionId: z.number().int().min(1).max(0xffffffff), c2s: secret, s2c: secret }).optional(),
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
  /** recv: the server sends exactly one regular file (the client's DEST may name it) */
  single: z.boolean().optional(),
});

/** sender: "what do you have for these files?" (planned sessions only) */
export const ProbeEntrySchema = z.strictObject({ id: fileId, path: relPath, size: u53, mtimeMs: timeMs.optional() });
export const ProbeSchema = z.strictObject({ t: z.literal('probe'), files: batch(ProbeEntrySchema) });

/** A byte range of a file and the SHA-256 of its bytes. */
export const RangeSumSchema = z.strictObject({ at: u53, len: u53, sha256: sha256Hex });

/** receiver: its decision for probed files */
export const PlanEntrySchema = z.discriminatedUnion('do', [
  /** transfer the whole file */
  z.strictObject({ id: fileId, do: z.literal('send') }),
  /** transfer from `offset` (a partial file whose attributes match) */
  z.strictObject({ id: fileId, do: z.literal('resume'), offset: u53 }),
  /**
   * compare these digests of the receiver's bytes with the source: equal -> `then`
   * (resume at `offset`, or skip a complete file that is the same); different -> send all
   */
  z.strictObject({ id: fileId, do: z.literal('check'), offset: u53, sums: z.array(RangeSumSchema).min(1).max(64), then: z.enum(['resume', 'skip']) }),
  /** do not transfer: the destination exists (`never`), is not older, or is the same */
  z.strictObject({ id: fileId, do: z.literal('skip'), reason: z.enum(['exists', 'newer', 'same']) }),
  /** refused (e.g. the destination is a directory) */
  z.strictObject({ id: fileId, do: z.literal('refuse'), code: errorCode, message: errorText }),
]);
export const PlanSchema = z.strictObject({ t: z.literal('plan'), files: batch(PlanEntrySchema) });

/** sender: a file whose blocks are the SSN range [ssn0, ssn0 + ceil((size - offset) / payload)) */
export const AnnounceSchema = z.strictObject({
  id: fileId,
  /** relative path with '/' separators; the receiver resolves and confines it */
  path: relPath,
  size: u53,
  mtimeMs: timeMs.optional(),
  /** only when the receiver asked to preserve times */
  atimeMs: timeMs.optional(),
  /** bytes already at the receiver (resume); blocks start here */
  offset: u53.optional(),
  /** first stream sequence number of this file's blocks */
  ssn0: u53,
});
/** sender: a probed file it will not send (the receiver's digests matched, or reading it failed) */
export const DeclineSchema = z.strictObject({
  id: fileId,
  skip: z.enum(['same', 'failed']),
  code: errorCode.optional(),
  message: errorText.optional(),
});
/**
 * sender: the SSN range [ssn0, ssn0 + void) carries no file: blocks sent speculatively
 * before a plan that did not ask for them. The receiver counts it received and never asks for it.
 */
export const VoidSchema = z.strictObject({ void: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER), ssn0: u53 });
export const FilesSchema = z.strictObject({ t: z.literal('files'), files: batch(z.union([AnnounceSchema, DeclineSchema, VoidSchema])) });

export const DirsSchema = z.strictObject({ t: z.literal('dirs'), paths: batch(relPath) });
export const DigestsSchema = z.strictObject({ t: z.literal('digests'), files: batch(z.strictObject({ id: fileId, sha256: sha256Hex })) });
export const EndSchema = z.strictObject({ t: z.literal('end'), files: u53, bytes: u53 });
export const ResultEntrySchema = z.strictObject({
  id: fileId,
  ok: z.boolean(),
  sha256: sha256Hex.optional(),
  code: errorCode.optional(),
  message: errorText.optional(),
});
export const ResultsSchema = z.strictObject({ t: z.literal('results'), files: batch(ResultEntrySchema) });
export const ErrorSchema = z.strictObject({
  t: z.literal('error'),
  code: errorCode,
  message: errorText,
  correlationId: z.string().max(64).optional(),
});
export const ByeSchema = z.strictObject({ t: z.literal('bye') });

export const ControlMessageSchema = z.discriminatedUnion('t', [
  HelloSchema,
  WelcomeSchema,
  ProbeSchema,
  PlanSchema,
  FilesSchema,
  DirsSchema,
  DigestsSchema,
  EndSchema,
  ResultsSchema,
  ErrorSchema,
  ByeSchema,
]);

export type Hello = z.infer<typeof HelloSchema>;
export type Welcome = z.infer<typeof WelcomeSchema>;
export type ProbeEntry = z.infer<typeof ProbeEntrySchema>;
export type PlanEntry = z.infer<typeof PlanEntrySchema>;
export type RangeSum = z.infer<typeof RangeSumSchema>;
export type Announce = z.infer<typeof AnnounceSchema>;
export type Decline = z.infer<typeof DeclineSchema>;
export type VoidRange = z.infer<typeof VoidSchema>;
export type ResultEntry = z.infer<typeof ResultEntrySchema>;
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
