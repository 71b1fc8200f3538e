/**
 * Key pairs for tests. ssh2's generator drops a leading zero byte of an ed25519 public
 * key (about 1 key in 220 is 31 bytes long and refused by every parser): such pairs are
 * generated again, so that a test never fails on a key it made itself.
 */
import ssh2 from 'ssh2';

export function generateSshKeyPair(type: 'ed25519' | 'ecdsa', comment: string): { private: string; public: string } {
  for (;;) {
    const pair = type === 'ecdsa' ? ssh2.utils.generateKeyPairSync('ecdsa', { bits: 256, comment }) : ssh2.utils.generateKeyPairSync('ed25519', { comment });
    if (!(ssh2.utils.parseKey(pair.private) instanceof Error) && !(ssh2.utils.parseKey(pair.public) instanceof Error)) return pair;
  }
}
