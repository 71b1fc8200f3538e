/**
 * SFTP (version 3, as OpenSSH speaks it) on a user's jail, for the tools people already
 * have: OpenSSH's `sftp`, rclone's sftp backend, and anything built on ssh2 or pkg/sftp.
 * ssh2 parses the protocol (`SFTPWrapper` in server mode); this module answers each
 * request through the hardened {@link Jail} and a {@link Permissions} set, keeps a
 * bounded table of open handles per session, and reports one audit event per operation
 * (file reads and writes are summed into one event per handle, sent when it closes).
 *
 * What a client sees of an error is a status code and a sanitized message:
 * `NOT_FOUND` → NO_SUCH_FILE; `PERMISSION` and `PATH_INVALID` → PERMISSION_DENIED; anything
 * else → FAILURE with the error code's public message. Symbolic links are not part of the
 * client's view: READLINK and SYMLINK are refused, listings show links that stay inside the
 * root as what they point to and leave the others out. See docs/sftp.md.
 */
import { close as fsClose, fchmod, fstat, ftruncate, futimes, read as fsRead, write as fsWrite, closeSync } from 'node:fs';
import type { Stats } from 'node:fs';
import { createRequire } from 'node:module';
import type { Duplex } from 'node:stream';
import type { Attributes, FileEntry, SFTPWrapper } from 'ssh2';
import { systemClock, type Clock } from '../core/clock.js';
import { TachyonError, toTachyonError, type ErrorCode } from '../core/errors.js';
import type { AuditEvent, AuditSink } from '../audit/index.js';
import type { SessionInfo, SubsystemHandler } from '../control/ssh-server.js';
import type { Jail, JailEntry } from '../transfer/jail.js';
import { requirePermission, type Permission, type Permissions } from '../transfer/permissions.js';

/** SFTP v3 status codes (draft-ietf-secsh-filexfer-02). */
export const SFTP_STATUS = {
  OK: 0,
  EOF: 1,
  NO_SUCH_FILE: 2,
  PERMISSION_DENIED: 3,
  FAILURE: 4,
  BAD_MESSAGE: 5,
  OP_UNSUPPORTED: 8,
} as const;

/** SFTP v3 open flags. */
const OPEN = { READ: 0x01, WRITE: 0x02, APPEND: 0x04, CREAT: 0x08, TRUNC: 0x10, EXCL: 0x20 } as const;

/** The server side of ssh2's SFTP stream that this module uses. */
export type SftpServerStream = Pick<SFTPWrapper, 'on' | 'status' | 'handle' | 'data' | 'name' | 'attrs' | 'end'>;

export interface SftpLimits {
  /** Open file and directory handles per session. Default 256. */
  maxHandles: number;
  /** Largest READ answered; longer requests get a short read (clients ask again). Default 64 KiB. */
  maxReadBytes: number;
  /** Largest WRITE accepted. Default 256 KiB (ssh2 caps packets at 256 KiB anyway). */
  maxWriteBytes: number;
  /** Reads and writes running at once per session; the rest wait in order. Default 64. */
  maxConcurrentIo: number;
  /** Reads and writes waiting per session; beyond this a request fails. Default 4096. */
  maxQueuedIo: number;
  /** Entries per READDIR answer. Default 100. */
  readdirBatch: number;
}

export const DEFAULT_SFTP_LIMITS: Readonly<SftpLimits> = Object.freeze({
  maxHandles: 256,
  maxReadBytes: 64 * 1024,
  maxWriteBytes: 256 * 1024,
  maxConcurrentIo: 64,
  maxQueuedIo: 4096,
  readdirBatch: 100,
});

export type SftpOp =
  | 'session-start'
  | 'session-end'
  | 'protocol-error'
  | 'open'
  | 'read'
  | 'write'
  | 'fstat'
  | 'fsetstat'
  | 'stat'
  | 'lstat'
  | 'setstat'
  | 'opendir'
  | 'list'
  | 'mkdir'
  | 'rmdir'
  | 'remove'
  | 'rename'
  | 'realpath'
  | 'readlink'
  | 'symlink'
  | 'extended';

/**
 * - `ok`: done; `denied`: the user lacks a permission; `refused`: the jail refused the
 *   path (`reason` says why, e.g. `symlink-escape`) or the operation is not offered;
 *   `failed`: anything else (not found, exists, I/O); `aborted`: a handle still open when
 *   the session ended.
 */
export type SftpOutcome = 'ok' | 'denied' | 'refused' | 'failed' | 'aborted';

/** One audit record per operation. Never holds file data or secrets. */
export interface SftpEvent {
  type: 'sftp';
  user: string;
  op: SftpOp;
  /** The path as the client named it (clipped, control characters escaped). */
  path?: string;
  /** RENAME's target. */
  toPath?: string;
  /** Bytes read or written through a handle (read/write events). */
  bytes?: number;
  /** Entries listed (list events). */
  entries?: number;
  outcome: SftpOutcome;
  /** Error code when the outcome is not `ok`. */
  code?: ErrorCode;
  /** `details.reason` of the error (jail refusals, `permission`). */
  reason?: string;
  /** The permission that was missing (denied events). */
  permission?: Permission;
  durationMs: number;
}

export interface SftpContext {
  jail: Jail;
  /** What the user may do (deny by default). */
  permissions: Permissions | readonly Permission[];
  /** The authenticated user, for the audit events. */
  user: string;
  onEvent?(e: SftpEvent): void;
  limits?: Partial<SftpLimits>;
  clock?: Clock;
}

/** A running SFTP session. */
export interface SftpSession {
  /** Resolves once the stream ended and every handle is closed. */
  readonly closed: Promise<void>;
  /** Ends the session (closes the stream; handles are closed). */
  close(): void;
  /** Open handles right now. */
  readonly openHandles: number;
}

interface FileHandle {
  kind: 'file';
  fd: number;
  path: string;
  readable: boolean;
  writable: boolean;
  bytesRead: number;
  bytesWritten: number;
  opened: number;
  pending: number;
  idle: (() => void) | undefined;
}

interface DirHandle {
  kind: 'dir';
  path: string;
  entries: JailEntry[];
  pos: number;
  opened: number;
}

type Handle = FileHandle | DirHandle;

/**
 * Answers SFTP requests on `sftp` for one user until the stream ends.
 */
export function serveSftp(sftp: SftpServerStream, ctx: SftpContext): SftpSession {
  const limits: SftpLimits = { ...DEFAULT_SFTP_LIMITS, ...(ctx.limits ?? {}) };
  const clock = ctx.clock ?? systemClock;
  const { jail } = ctx;
  const permissions: Permissions = new Set(ctx.permissions);
  const handles = new Map<number, Handle>();
  let nextHandle = 1;
  let ended = false;
  let running = 0;
  const queue: (() => void)[] = [];
  let resolveClosed: () => void = () => {};
  const closed = new Promise<void>((r) => (resolveClosed = r));
  const started = clock.now();

  const emit = (e: Omit<SftpEvent, 'type' | 'user'>): void => {
    try {
      ctx.onEvent?.({ type: 'sftp', user: ctx.user, ...e });
    } catch {
      /* an audit sink must not break the session */
    }
  };

  const reply = (fn: () => void): void => {
    if (ended) return;
    try {
      fn();
    } catch {
      /* the stream is gone */
    }
  };

  const fail = (reqId: number, op: SftpOp, t0: number, err: unknown, where: { path?: string; toPath?: string } = {}): void => {
    const te = toTachyonError(err, 'IO');
    const reason = typeof te.details?.['reason'] === 'string' ? (te.details['reason'] as string) : undefined;
    const permission = te.details?.['permission'] as Permission | undefined;
    emit({
      op,
      ...where,
      outcome: te.code === 'PERMISSION' ? 'denied' : te.code === 'PATH_INVALID' ? 'refused' : 'failed',
      code: te.code,
      ...(reason !== undefined ? { reason } : {}),
      ...(permission !== undefined ? { permission } : {}),
      durationMs: clock.now() - t0,
    });
    reply(() => sftp.status(reqId, statusOf(te), te.publicMessage));
  };

  /** Runs a path operation: answers with what `fn` sends, or maps its error. */
  const op = (reqId: number, name: SftpOp, where: { path?: string; toPath?: string }, fn: () => void, audit = true): void => {
    const t0 = clock.now();
    try {
      fn();
      if (audit) emit({ op: name, ...where, outcome: 'ok', durationMs: clock.now() - t0 });
    } catch (err) {
      fail(reqId, name, t0, err, where);
    }
  };

  const ok = (reqId: number): void => reply(() => sftp.status(reqId, SFTP_STATUS.OK));

  const addHandle = (h: Handle): Buffer => {
    const id = nextHandle;
    nextHandle = nextHandle >= 0xffffffff ? 1 : nextHandle + 1;
    handles.set(id, h);
    const b = Buffer.alloc(4);
    b.writeUInt32BE(id, 0);
    return b;
  };

  const lookup = (handle: Buffer): [number, Handle] | undefined => {
    if (!Buffer.isBuffer(handle) || handle.length !== 4) return undefined;
    const id = handle.readUInt32BE(0);
    const h = handles.get(id);
    return h === undefined ? undefined : [id, h];
  };

  const badHandle = (reqId: number): void => reply(() => sftp.status(reqId, SFTP_STATUS.FAILURE, 'Invalid handle.'));

  const checkHandleRoom = (): void => {
    if (handles.size >= limits.maxHandles) {
      throw new TachyonError('IO', `more than ${limits.maxHandles} open handles`, { publicMessage: `Too many open handles (limit ${limits.maxHandles}).` });
    }
  };

  /** Runs file I/O with bounded concurrency; `task` must settle through `done`. */
  const io = (reqId: number, h: FileHandle, task: (done: () => void) => void): void => {
    if (queue.length >= limits.maxQueuedIo) {
      reply(() => sftp.status(reqId, SFTP_STATUS.FAILURE, 'Too many outstanding requests.'));
      return;
    }
    h.pending++;
    const start = (): void => {
      running++;
      task(() => {
        running--;
        h.pending--;
        if (h.pending === 0) h.idle?.();
        const next = queue.shift();
        if (next) next();
      });
    };
    if (running < limits.maxConcurrentIo) start();
    else queue.push(start);
  };

  const closeFile = (h: FileHandle, outcome: SftpOutcome): Promise<void> =>
    new Promise<void>((resolve) => {
      const finish = (): void => {
        h.idle = undefined;
        fsClose(h.fd, () => {
          emit({
            op: h.writable ? 'write' : 'read',
            path: h.path,
            bytes: h.writable ? h.bytesWritten : h.bytesRead,
            outcome,
            durationMs: clock.now() - h.opened,
          });
          resolve();
        });
      };
      if (h.pending === 0) finish();
      else h.idle = finish;
    });

  const closeDir = (h: DirHandle, outcome: SftpOutcome): void => {
    emit({ op: 'list', path: h.path, entries: Math.min(h.pos, h.entries.length), outcome, durationMs: clock.now() - h.opened });
  };

  // ---- session ------------------------------------------------------------------------

  sftp.on('ready', () => emit({ op: 'session-start', outcome: 'ok', durationMs: 0 }));

  let finishing = false;
  const finish = (): void => {
    if (finishing) return;
    finishing = true;
    ended = true;
    const open = [...handles.values()];
    handles.clear();
    queue.length = 0;
    const waits = open.map((h) => {
      if (h.kind === 'file') return closeFile(h, 'aborted');
      closeDir(h, 'aborted');
      return Promise.resolve();
    });
    void Promise.all(waits).then(() => {
      // the client sent EOF (or the channel closed): close our side too, as sftp-server
      // does by exiting; OpenSSH's client waits for it
      try {
        sftp.end();
      } catch {
        /* already closed */
      }
      emit({ op: 'session-end', outcome: 'ok', durationMs: clock.now() - started });
      resolveClosed();
    });
  };
  sftp.on('end', finish);
  sftp.on('close', finish);
  const protocolError = (): void => {
    if (!finishing) emit({ op: 'protocol-error', outcome: 'failed', code: 'PROTOCOL', durationMs: 0 });
    try {
      sftp.end();
    } catch {
      /* already closed */
    }
    finish();
  };
  // ssh2 reports the malformed packets it detects as 'error' …
  sftp.on('error', protocolError);
  // … but some (e.g. a READ or FSETSTAT whose handle string is cut short) make its parser
  // throw instead; uncaught, that would reach the connection or the process.
  const parser = sftp as SftpServerStream & { push?: (data: Buffer | null) => unknown };
  if (typeof parser.push === 'function') {
    const push = parser.push.bind(sftp);
    parser.push = (data: Buffer | null): unknown => {
      try {
        return push(data);
      } catch {
        protocolError();
        return true;
      }
    };
  }

  // ---- files --------------------------------------------------------------------------

  sftp.on('OPEN', (reqId: number, filename: string, flags: number, attrs: Attributes) => {
    const where = { path: shown(filename) };
    const t0 = clock.now();
    try {
      checkHandleRoom();
      const wantsWrite = (flags & (OPEN.WRITE | OPEN.APPEND | OPEN.CREAT | OPEN.TRUNC)) !== 0;
      const wantsRead = (flags & OPEN.READ) !== 0 || !wantsWrite;
      if (wantsRead) requirePermission(permissions, 'read', `open ${where.path}`);
      if (wantsWrite) requirePermission(permissions, 'write', `open ${where.path}`);
      const opened = wantsWrite
        ? jail.openForWrite(filename, {
            create: (flags & OPEN.CREAT) !== 0,
            exclusive: (flags & OPEN.EXCL) !== 0,
            truncate: (flags & OPEN.TRUNC) !== 0,
            append: (flags & OPEN.APPEND) !== 0,
            read: wantsRead,
            ...(typeof attrs?.mode === 'number' ? { mode: attrs.mode } : {}),
          })
        : jail.openForRead(filename);
      const h: FileHandle = {
        kind: 'file',
        fd: opened.fd,
        path: where.path,
        readable: wantsRead,
        writable: wantsWrite,
        bytesRead: 0,
        bytesWritten: 0,
        opened: t0,
        pending: 0,
        idle: undefined,
      };
      if (ended) {
        closeSync(opened.fd);
        return;
      }
      const buf = addHandle(h);
      reply(() => sftp.handle(reqId, buf));
    } catch (err) {
      fail(reqId, 'open', t0, err, where);
    }
  });

  sftp.on('READ', (reqId: number, handle: Buffer, offset: number, length: number) => {
    const found = lookup(handle);
    if (found === undefined || found[1].kind !== 'file') return badHandle(reqId);
    const h = found[1];
    if (!h.readable) return reply(() => sftp.status(reqId, SFTP_STATUS.FAILURE, 'The file is not open for reading.'));
    if (!Number.isSafeInteger(offset) || offset < 0) return reply(() => sftp.status(reqId, SFTP_STATUS.FAILURE, 'Invalid offset.'));
    const len = Math.min(length, limits.maxReadBytes);
    const t0 = clock.now();
    io(reqId, h, (done) => {
      if (len <= 0) {
        reply(() => sftp.data(reqId, Buffer.alloc(0)));
        return done();
      }
      const buf = Buffer.allocUnsafe(len);
      fsRead(h.fd, buf, 0, len, offset, (err, n) => {
        done();
        if (err) return fail(reqId, 'read', t0, translate(err), { path: h.path });
        if (n === 0) return reply(() => sftp.status(reqId, SFTP_STATUS.EOF));
        h.bytesRead += n;
        reply(() => sftp.data(reqId, n === len ? buf : buf.subarray(0, n)));
      });
    });
  });

  sftp.on('WRITE', (reqId: number, handle: Buffer, offset: number, data: Buffer) => {
    const found = lookup(handle);
    if (found === undefined || found[1].kind !== 'file') return badHandle(reqId);
    const h = found[1];
    if (!h.writable) return reply(() => sftp.status(reqId, SFTP_STATUS.FAILURE, 'The file is not open for writing.'));
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(offset + data.length)) {
      return reply(() => sftp.status(reqId, SFTP_STATUS.FAILURE, 'Invalid offset.'));
    }
    if (data.length > limits.maxWriteBytes) {
      return reply(() => sftp.status(reqId, SFTP_STATUS.FAILURE, `Write larger than ${limits.maxWriteBytes} bytes.`));
    }
    const t0 = clock.now();
    io(reqId, h, (done) => {
      let at = 0;
      const step = (): void => {
        if (at === data.length) {
          done();
          h.bytesWritten += data.length;
          return ok(reqId);
        }
        fsWrite(h.fd, data, at, data.length - at, offset + at, (err, n) => {
          if (err) {
            done();
            return fail(reqId, 'write', t0, translate(err), { path: h.path });
          }
          at += n;
          step();
        });
      };
      step();
    });
  });

  sftp.on('FSTAT', (reqId: number, handle: Buffer) => {
    const found = lookup(handle);
    if (found === undefined || found[1].kind !== 'file') return badHandle(reqId);
    const h = found[1];
    const t0 = clock.now();
    io(reqId, h, (done) => {
      fstat(h.fd, (err, st) => {
        done();
        if (err) return fail(reqId, 'fstat', t0, translate(err), { path: h.path });
        reply(() => sftp.attrs(reqId, attrsOf(st)));
      });
    });
  });

  sftp.on('FSETSTAT', (reqId: number, handle: Buffer, attrs: Attributes) => {
    const found = lookup(handle);
    if (found === undefined || found[1].kind !== 'file') return badHandle(reqId);
    const h = found[1];
    const t0 = clock.now();
    try {
      requirePermission(permissions, 'write', `fsetstat ${h.path}`);
      if (attrs.size !== undefined && !h.writable) {
        throw new TachyonError('PERMISSION', 'truncate through a read-only handle', { publicMessage: 'The file is not open for writing.' });
      }
    } catch (err) {
      return fail(reqId, 'fsetstat', t0, err, { path: h.path });
    }
    io(reqId, h, (done) => {
      applyAttrs(h.fd, attrs, (err) => {
        done();
        if (err) return fail(reqId, 'fsetstat', t0, err, { path: h.path });
        emit({ op: 'fsetstat', path: h.path, outcome: 'ok', durationMs: clock.now() - t0 });
        ok(reqId);
      });
    });
  });

  sftp.on('CLOSE', (reqId: number, handle: Buffer) => {
    const found = lookup(handle);
    if (found === undefined) return badHandle(reqId);
    const [id, h] = found;
    handles.delete(id);
    if (h.kind === 'dir') {
      closeDir(h, 'ok');
      return ok(reqId);
    }
    void closeFile(h, 'ok').then(() => ok(reqId));
  });

  // ---- directories ----------------------------------------------------------------------

  sftp.on('OPENDIR', (reqId: number, dirPath: string) => {
    const where = { path: shown(dirPath) };
    op(
      reqId,
      'opendir',
      where,
      () => {
        checkHandleRoom();
        requirePermission(permissions, 'list', `list ${where.path}`);
        const entries = jail.list(dirPath);
        const buf = addHandle({ kind: 'dir', path: where.path, entries, pos: 0, opened: clock.now() });
        reply(() => sftp.handle(reqId, buf));
      },
      false,
    );
  });

  sftp.on('READDIR', (reqId: number, handle: Buffer) => {
    const found = lookup(handle);
    if (found === undefined || found[1].kind !== 'dir') return badHandle(reqId);
    const h = found[1];
    if (h.pos >= h.entries.length) return reply(() => sftp.status(reqId, SFTP_STATUS.EOF));
    const batch = h.entries.slice(h.pos, h.pos + limits.readdirBatch);
    h.pos += batch.length;
    const now = Date.now();
    const names: FileEntry[] = batch.map((e) => ({ filename: e.name, longname: longname(e.name, e.stats, now), attrs: attrsOf(e.stats) }));
    reply(() => sftp.name(reqId, names));
  });

  sftp.on('MKDIR', (reqId: number, dirPath: string, attrs: Attributes) => {
    const where = { path: shown(dirPath) };
    op(reqId, 'mkdir', where, () => {
      requirePermission(permissions, 'mkdir', `mkdir ${where.path}`);
      jail.mkdir(dirPath, typeof attrs?.mode === 'number' ? attrs.mode : 0o755);
      ok(reqId);
    });
  });

  sftp.on('RMDIR', (reqId: number, dirPath: string) => {
    const where = { path: shown(dirPath) };
    op(reqId, 'rmdir', where, () => {
      requirePermission(permissions, 'delete', `rmdir ${where.path}`);
      jail.rmdir(dirPath);
      ok(reqId);
    });
  });

  sftp.on('REMOVE', (reqId: number, filePath: string) => {
    const where = { path: shown(filePath) };
    op(reqId, 'remove', where, () => {
      requirePermission(permissions, 'delete', `remove ${where.path}`);
      jail.remove(filePath);
      ok(reqId);
    });
  });

  sftp.on('RENAME', (reqId: number, oldPath: string, newPath: string) => {
    const where = { path: shown(oldPath), toPath: shown(newPath) };
    op(reqId, 'rename', where, () => {
      requirePermission(permissions, 'rename', `rename ${where.path}`);
      jail.rename(oldPath, newPath, { overwrite: false });
      ok(reqId);
    });
  });

  // ---- metadata ---------------------------------------------------------------------------

  sftp.on('REALPATH', (reqId: number, p: string) => {
    const where = { path: shown(p) };
    op(reqId, 'realpath', where, () => {
      const abs = jail.resolve(p);
      const display = jail.display(abs);
      reply(() => sftp.name(reqId, [{ filename: display, longname: display, attrs: {} as Attributes }]));
    });
  });

  sftp.on('STAT', (reqId: number, p: string) => {
    const where = { path: shown(p) };
    op(reqId, 'stat', where, () => {
      const st = jail.stat(p);
      reply(() => sftp.attrs(reqId, attrsOf(st)));
    });
  });

  sftp.on('LSTAT', (reqId: number, p: string) => {
    const where = { path: shown(p) };
    op(reqId, 'lstat', where, () => {
      const st = jail.lstat(p);
      reply(() => sftp.attrs(reqId, attrsOf(st)));
    });
  });

  sftp.on('SETSTAT', (reqId: number, p: string, attrs: Attributes) => {
    const where = { path: shown(p) };
    const t0 = clock.now();
    let fd: number;
    try {
      requirePermission(permissions, 'write', `setstat ${where.path}`);
      fd = attrs.size !== undefined ? jail.openForWrite(p, { create: false }).fd : jail.openForRead(p, { directory: true }).fd;
    } catch (err) {
      return fail(reqId, 'setstat', t0, err, where);
    }
    applyAttrs(fd, attrs, (err) => {
      fsClose(fd, () => {
        if (err) return fail(reqId, 'setstat', t0, err, where);
        emit({ op: 'setstat', ...where, outcome: 'ok', durationMs: clock.now() - t0 });
        ok(reqId);
      });
    });
  });

  // ---- refused ------------------------------------------------------------------------------

  const unsupported = (name: SftpOp, what: string, p?: string, q?: string): ((reqId: number) => void) =>
    (reqId: number) => {
      emit({
        op: name,
        ...(p !== undefined ? { path: shown(p) } : {}),
        ...(q !== undefined ? { toPath: shown(q) } : {}),
        outcome: 'refused',
        reason: 'unsupported',
        durationMs: 0,
      });
      reply(() => sftp.status(reqId, SFTP_STATUS.OP_UNSUPPORTED, what));
    };
  sftp.on('READLINK', (reqId: number, p: string) => unsupported('readlink', 'Symbolic links are not supported.', p)(reqId));
  sftp.on('SYMLINK', (reqId: number, target: string, link: string) => unsupported('symlink', 'Symbolic links are not supported.', link, target)(reqId));
  sftp.on('EXTENDED', (reqId: number, extName: string) => unsupported('extended', 'Extension not supported.', String(extName))(reqId));

  return {
    closed,
    get openHandles() {
      return handles.size;
    },
    close() {
      try {
        sftp.end();
      } catch {
        /* already closed */
      }
      finish();
    },
  };
}

// ---- the ssh-server hook ------------------------------------------------------------------

interface Ssh2SftpModule {
  SFTP: new (client: unknown, chanInfo: unknown, cfg: { server: boolean }) => SftpServerStream & { push(data: Buffer | null): void; emit(event: string): boolean };
}

/**
 * ssh2's SFTP server protocol over a raw subsystem channel — what the control server's
 * `extraSubsystems` hook hands over (it accepts the `sftp` subsystem as a plain channel).
 * Uses ssh2's SFTP class (`ssh2/lib/protocol/SFTP.js`) with the channel as transport.
 */
export function sftpOverChannel(channel: Duplex, options: { beforeClose?: () => void } = {}): SftpServerStream {
  const { SFTP } = createRequire(import.meta.url)('ssh2/lib/protocol/SFTP.js') as Ssh2SftpModule;
  const remoteIdent = (channel as unknown as { _client?: { _protocol?: { _remoteIdentRaw?: unknown } } })._client?._protocol?._remoteIdentRaw;
  const transport = {
    _protocol: {
      _remoteIdentRaw: typeof remoteIdent === 'string' ? remoteIdent : undefined,
      channelData: (_id: number, data: Buffer): void => {
        channel.write(data);
      },
      channelClose: (): void => {
        try {
          options.beforeClose?.();
        } catch {
          /* the channel is going anyway */
        }
        channel.end();
      },
    },
  };
  const side = (): Record<string, unknown> => ({ id: 0, window: Infinity, packetSize: Infinity, state: 'open' });
  const sftp = new SFTP(transport, { type: 'session', incoming: side(), outgoing: side() }, { server: true });
  channel.on('data', (d: Buffer) => {
    try {
      sftp.push(d);
    } catch {
      // a malformed packet that ssh2's parser does not survive (serveSftp also guards this)
      channel.destroy();
    }
  });
  // the client's EOF ends the SFTP session; serveSftp then closes the channel
  channel.on('end', () => sftp.push(null));
  channel.on('close', () => sftp.emit('close'));
  channel.on('error', () => sftp.emit('close'));
  return sftp;
}

/**
 * The control server's SubsystemHandler serving SFTP with the context `ctx` (exit
 * status 0 is sent before the channel closes, as sftp-server's exit gives it).
 */
function sftpHandler(ctx: SftpContext): SubsystemHandler {
  return (channel) => {
    serveSftp(sftpOverChannel(channel, { beforeClose: () => channel.exit(0) }), ctx);
  };
}

/**
 * A handler for the control server's `extraSubsystems.sftp`: serves SFTP on each
 * channel with the context `contextFor` gives for the authenticated session (throw to
 * refuse; the channel is then closed).
 */
export function sftpSubsystem(contextFor: (info: SessionInfo) => SftpContext): SubsystemHandler {
  return (channel, info, control) => sftpHandler(contextFor(info))(channel, info, control);
}

/**
 * SFTP for the transfer server's `subsystems` option (`{ sftp: sftpForAccounts({ audit }) }`):
 * each session gets its account's jail and permissions, and its events go to the audit
 * sink (see {@link sftpAuditEvent}; the connection id is the correlation id) and to
 * `onEvent`.
 */
export function sftpForAccounts(o: { audit?: AuditSink; onEvent?(e: SftpEvent): void; limits?: Partial<SftpLimits>; clock?: Clock } = {}): (
  account: { readonly name: string; readonly permissions: readonly Permission[]; readonly requireEncryptedAtRest?: boolean },
  jail: Jail,
  info: SessionInfo,
) => SubsystemHandler {
  return (account, jail, info) =>
    sftpHandler({
      jail,
      // an account that accepts only client-side encrypted files cannot write over SFTP:
      // there is no point where the server could check the content before it is visible
      permissions: account.requireEncryptedAtRest ? account.permissions.filter((p) => p !== 'write') : account.permissions,
      user: info.user,
      ...(o.limits ? { limits: o.limits } : {}),
      ...(o.clock ? { clock: o.clock } : {}),
      onEvent: (e) => {
        o.onEvent?.(e);
        const a = o.audit === undefined ? undefined : sftpAuditEvent(e, info);
        if (a !== undefined) {
          try {
            o.audit?.record(a);
          } catch {
            /* the sink reports its own failures; SFTP carries on */
          }
        }
      },
    });
}

const QUIET_OPS: ReadonlySet<SftpOp> = new Set(['session-start', 'session-end', 'open', 'stat', 'lstat', 'fstat', 'realpath', 'opendir']);

/**
 * The audit record of an SFTP event, or undefined for the ones not worth a record:
 * refusals by the jail (`refusal.jail`) and by permissions (`refusal.permission`) always;
 * every file read or written through a handle (`file.transfer`, status `partial` when the
 * client went away with it open); changes (mkdir, rmdir, remove, rename, setstat) and
 * listings (`file.operation`); malformed packets (`refusal.channel`). Metadata lookups
 * that succeed or fail plainly (stat, realpath, a missing file) and session start/end
 * (the control server records those) are not recorded.
 */
export function sftpAuditEvent(e: SftpEvent, peer: { clientAddress: string; clientPort: number; connectionId?: string }): AuditEvent | undefined {
  const base = {
    component: 'sftp',
    ...(peer.connectionId !== undefined ? { correlationId: peer.connectionId } : {}),
  } as const;
  const where = { clientAddress: peer.clientAddress, clientPort: peer.clientPort };
  if (e.op === 'protocol-error') {
    return { ...base, type: 'refusal.channel', fields: { ...where, user: e.user, what: 'sftp-packet', detail: 'malformed' } };
  }
  if (e.outcome === 'refused') {
    return { ...base, type: 'refusal.jail', fields: { ...where, user: e.user, path: e.path ?? '', reason: e.reason ?? 'refused', op: e.op } };
  }
  if (e.outcome === 'denied') {
    return {
      ...base,
      type: 'refusal.permission',
      fields: { ...where, user: e.user, permission: e.permission ?? 'unknown', ...(e.path !== undefined ? { path: e.path } : {}), op: e.op },
    };
  }
  if ((e.op === 'read' || e.op === 'write') && e.bytes !== undefined) {
    const seconds = e.durationMs / 1000;
    return {
      ...base,
      type: 'file.transfer',
      fields: {
        ...where,
        user: e.user,
        direction: e.op === 'read' ? 'download' : 'upload',
        source: e.op === 'read' ? (e.path ?? '') : 'sftp-client',
        destination: e.op === 'write' ? (e.path ?? '') : 'sftp-client',
        bytes: e.bytes,
        durationMs: Math.round(e.durationMs),
        rateBps: seconds > 0 ? Math.round((e.bytes * 8) / seconds) : 0,
        cipher: 'ssh',
        status: e.outcome === 'ok' ? 'ok' : e.outcome === 'aborted' ? 'partial' : 'failed',
        ...(e.code !== undefined ? { code: e.code } : {}),
      },
    };
  }
  if (QUIET_OPS.has(e.op)) return undefined;
  return {
    ...base,
    type: 'file.operation',
    fields: {
      ...where,
      user: e.user,
      op: e.op,
      path: e.path ?? '',
      ...(e.toPath !== undefined ? { target: e.toPath } : {}),
      status: e.outcome === 'ok' ? 'ok' : 'failed',
      ...(e.code !== undefined ? { code: e.code } : {}),
    },
  };
}

// ---- helpers ------------------------------------------------------------------------------

function statusOf(err: TachyonError): number {
  switch (err.code) {
    case 'NOT_FOUND':
      return SFTP_STATUS.NO_SUCH_FILE;
    case 'PERMISSION':
    case 'PATH_INVALID':
      return SFTP_STATUS.PERMISSION_DENIED;
    default:
      return SFTP_STATUS.FAILURE;
  }
}

/** Node errors met on an open handle. */
function translate(err: NodeJS.ErrnoException): TachyonError {
  return toTachyonError(err, 'IO');
}

/** A client path fit for an audit line: clipped, control characters escaped. */
function shown(p: unknown): string {
  const s = typeof p === 'string' ? p : String(p);
  const clipped = s.length > 512 ? `${s.slice(0, 512)}…` : s;
  // eslint-disable-next-line no-control-regex -- escaping control characters is the point
  return clipped.replace(/[\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

function attrsOf(st: Stats): Attributes {
  return {
    mode: st.mode,
    uid: st.uid,
    gid: st.gid,
    size: st.size,
    atime: Math.floor(st.atimeMs / 1000),
    mtime: Math.floor(st.mtimeMs / 1000),
  };
}

/**
 * Applies SETSTAT/FSETSTAT attributes through a verified descriptor: size (truncate),
 * permission bits (only the 0755 bits, and always owner read/write — plus search on
 * directories; never setuid, setgid or sticky), access and modification times. Changing
 * the owner or group is refused.
 */
function applyAttrs(fd: number, attrs: Attributes, cb: (err: TachyonError | undefined) => void): void {
  fstat(fd, (err, st) => {
    if (err) return cb(translate(err));
    const steps: ((next: (e: NodeJS.ErrnoException | null) => void) => void)[] = [];
    if ((attrs.uid !== undefined && attrs.uid !== st.uid) || (attrs.gid !== undefined && attrs.gid !== st.gid)) {
      return cb(new TachyonError('PERMISSION', 'chown refused', { publicMessage: 'Changing the owner or group is not allowed.', details: { reason: 'chown' } }));
    }
    if (attrs.size !== undefined) {
      if (!Number.isSafeInteger(attrs.size) || attrs.size < 0) return cb(new TachyonError('IO', 'bad size', { publicMessage: 'Invalid size.' }));
      if (!st.isFile()) return cb(new TachyonError('IS_DIRECTORY', 'truncate of a directory', { publicMessage: 'It is a directory.' }));
      steps.push((next) => ftruncate(fd, attrs.size, next));
    }
    if (attrs.mode !== undefined) {
      const mode = (attrs.mode & 0o755) | (st.isDirectory() ? 0o700 : 0o600);
      steps.push((next) => fchmod(fd, mode, next));
    }
    if (attrs.atime !== undefined || attrs.mtime !== undefined) {
      const atime = attrs.atime ?? Math.floor(st.atimeMs / 1000);
      const mtime = attrs.mtime ?? Math.floor(st.mtimeMs / 1000);
      steps.push((next) => futimes(fd, atime, mtime, next));
    }
    const run = (i: number): void => {
      const step = steps[i];
      if (step === undefined) return cb(undefined);
      step((e) => (e ? cb(translate(e)) : run(i + 1)));
    };
    run(0);
  });
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

/** An `ls -l` line, as OpenSSH's sftp-server sends in READDIR (shown by `ls -l`). */
function longname(name: string, st: Stats, nowMs: number): string {
  const type = st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : st.isFile() ? '-' : '?';
  const bits = 'rwxrwxrwx';
  let perms = '';
  for (let i = 0; i < 9; i++) perms += st.mode & (1 << (8 - i)) ? bits[i] : '-';
  const d = new Date(st.mtimeMs);
  const recent = Math.abs(nowMs - st.mtimeMs) < 182 * 24 * 3600 * 1000;
  const when = `${MONTHS[d.getMonth()]} ${String(d.getDate()).padStart(2)} ${recent ? `${String(d.getHours()).padStart(2, '0')}:${String(d.getMinutes()).padStart(2, '0')}` : ` ${d.getFullYear()}`}`;
  return `${type}${perms} ${String(st.nlink).padStart(3)} ${String(st.uid).padEnd(8)} ${String(st.gid).padEnd(8)} ${String(st.size).padStart(8)} ${when} ${name}`;
}
