/**
 * Telling administrators about blocks: the {@link Notifier} seam, a webhook adapter (HTTP
 * POST of the notice as JSON) and an SMTP adapter (nodemailer). Notices carry the address,
 * the score, the ban count and the end of the block — never a credential.
 */
import type { Transporter } from 'nodemailer';
import { TachyonError } from '../core/errors.js';

/** What happened. */
export type DefenderNotice =
  | { readonly event: 'blocked'; readonly address: string; readonly score: number; readonly banCount: number; readonly until: string; readonly at: string }
  | { readonly event: 'unblocked'; readonly address: string; readonly actor: string; readonly at: string };

export interface Notifier {
  /** Delivers a notice; rejects with a TachyonError (`IO`, `CONNECT`) if it could not. */
  notify(n: DefenderNotice): Promise<void>;
  close?(): Promise<void>;
}

export interface WebhookOptions {
  /** http:// or https:// URL. */
  readonly url: string;
  /** Extra headers (e.g. an authorization header the receiver expects). */
  readonly headers?: Readonly<Record<string, string>>;
  /** Default 5000 ms. */
  readonly timeoutMs?: number;
}

/** Validates a notification URL. */
export function checkWebhookUrl(url: string, where = 'webhook'): URL {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new TachyonError('CONFIG', `${where}: not a URL`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new TachyonError('CONFIG', `${where}: expected an http:// or https:// URL`);
  return u;
}

export class WebhookNotifier implements Notifier {
  private readonly url: URL;

  constructor(private readonly o: WebhookOptions) {
    this.url = checkWebhookUrl(o.url);
  }

  async notify(n: DefenderNotice): Promise<void> {
    let res: Response;
    try {
      res = await fetch(this.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': 'tachyon-defender', ...this.o.headers },
        body: JSON.stringify({ source: 'tachyon.defender', ...n }),
        signal: AbortSignal.timeout(this.o.timeoutMs ?? 5000),
        redirect: 'error',
      });
    } catch (err) {
      throw new TachyonError('CONNECT', `webhook ${this.url.origin}: ${(err as Error).message}`, { cause: err });
    }
    await res.arrayBuffer().catch(() => undefined);
    if (!res.ok) throw new TachyonError('IO', `webhook ${this.url.origin} answered ${res.status}`, { details: { status: res.status } });
  }
}

export interface SmtpOptions {
  readonly host: string;
  readonly port: number;
  /** TLS from the start (port 465). Default false: STARTTLS when offered. */
  readonly secure?: boolean;
  /** Refuse to send without STARTTLS. Default false. */
  readonly requireTls?: boolean;
  readonly user?: string;
  readonly password?: string;
  readonly from: string;
  readonly to: readonly string[];
  /** Extra TLS options (e.g. a CA for a private mail server). */
  readonly tls?: { readonly ca?: string; readonly rejectUnauthorized?: boolean };
}

export class SmtpNotifier implements Notifier {
  private transport: Promise<Transporter> | undefined;

  constructor(private readonly o: SmtpOptions) {
    if (o.to.length === 0) throw new TachyonError('CONFIG', 'smtp: at least one recipient');
  }

  /** nodemailer is loaded on first use (it is not needed until a block happens). */
  private async connect(): Promise<Transporter> {
    const o = this.o;
    const { createTransport } = await import('nodemailer');
    return createTransport({
      host: o.host,
      port: o.port,
      secure: o.secure ?? false,
      requireTLS: o.requireTls ?? false,
      ...(o.user !== undefined ? { auth: { user: o.user, pass: o.password ?? '' } } : {}),
      ...(o.tls !== undefined ? { tls: { ...o.tls } } : {}),
      connectionTimeout: 10_000,
      greetingTimeout: 10_000,
      socketTimeout: 20_000,
    });
  }

  async notify(n: DefenderNotice): Promise<void> {
    const subject = n.event === 'blocked' ? `Tachyon blocked ${n.address}` : `Tachyon unblocked ${n.address}`;
    const text =
      n.event === 'blocked'
        ? `The address ${n.address} was blocked at ${n.at} until ${n.until} (score ${n.score}, ban ${n.banCount}).\n\nLift the block with: tachyon defender unblock ${n.address}\n`
        : `The block of ${n.address} was lifted at ${n.at} by ${n.actor}.\n`;
    try {
      this.transport ??= this.connect();
      await (await this.transport).sendMail({ from: this.o.from, to: [...this.o.to], subject, text });
    } catch (err) {
      throw new TachyonError('CONNECT', `smtp ${this.o.host}:${this.o.port}: ${(err as Error).message}`, { cause: err });
    }
  }

  async close(): Promise<void> {
    const t = this.transport;
    this.transport = undefined;
    if (t) (await t).close();
  }
}

/** Sends each notice to every notifier; fails if any failed. */
export class FanOutNotifier implements Notifier {
  constructor(private readonly all: readonly Notifier[]) {}

  async notify(n: DefenderNotice): Promise<void> {
    const r = await Promise.allSettled(this.all.map((x) => x.notify(n)));
    const failed = r.find((x): x is PromiseRejectedResult => x.status === 'rejected');
    if (failed) throw failed.reason;
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.all.map((x) => x.close?.()));
  }
}
