export * from './address.js';
export * from './allow-list.js';
export * from './defender.js';
export * from './notifier.js';
