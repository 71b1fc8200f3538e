# independent reader of tachyon-enc v1, written from the layout only
import hashlib, hmac, struct, sys
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
salt = bytes(range(16)); pw = b'correct horse battery staple'
kek = Argon2id(salt=salt, length=32, iterations=1, lanes=1, memory_cost=1024).derive(pw)
print('kek', kek.hex())
print('scrypt', hashlib.scrypt(pw, salt=salt, n=1024, r=8, p=1, dklen=32).hex())
fid = bytes(range(16,32)); wn = bytes(range(32,44)); ck = bytes(range(64,96))
def enc(plain):
    h = bytearray(128)
    h[0:8] = b'TACHYENC'; h[8]=1; h[9]=1; h[10:12]=struct.pack('>H',128); h[12:16]=struct.pack('>I',65536)
    h[16:32]=fid; h[32]=1; h[36:48]=struct.pack('>III',1024,1,1); h[48:64]=salt; h[64:76]=wn
    w = AESGCM(kek).encrypt(wn, ck, bytes(h[0:64])); h[76:108]=w[:32]; h[108:124]=w[32:]
    h[124:128]=hashlib.sha256(h[:124]).digest()[:4]
    dk = HKDF(hashes.SHA256(),32,fid,b'tachyon-enc v1 data').derive(ck)
    nk = HKDF(hashes.SHA256(),32,fid,b'tachyon-enc v1 nonce').derive(ck)
    n = max(1, -(-len(plain)//65536)); out = bytes(h)
    for i in range(n):
        p = plain[i*65536:(i+1)*65536]
        aad = bytes(h[:32]) + struct.pack('>QB', i, 1 if i==n-1 else 0)
        nonce = hmac.new(nk, aad+p, 'sha256').digest()[:12]
        out += nonce + AESGCM(dk).encrypt(nonce, p, aad)
    return out
for n in (0,1,65536,65537):
    c = enc(bytes(i%251 for i in range(n)))
    print(n, len(c), c[128:].hex() if n<=1 else '', hashlib.sha256(c).hexdigest())
