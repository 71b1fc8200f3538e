/** The control channel: framed JSON messages over an SSH subsystem. */
export * from './messages.js';
export * from './framing.js';
export * from './deferred-link.js';
export * from './hostkeys.js';
export * from './ssh-server.js';
export * from './ssh-client.js';
