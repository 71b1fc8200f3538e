/** A ReceiverStore over MemoryStorage, and reading an object back whole: for the store-file tests. */
import type { MemoryStorage } from '../../src/storage/memory.js';
import type { ReceiverStore } from '../../src/transfer/store-file.js';

/** The receiving role's store over `backend`; directories are made as needed. */
export function storeOf(backend: MemoryStorage): ReceiverStore {
  return {
    backend,
    ensureDir: async (d) => {
      if (d === '') return;
      await backend.mkdir(d, { recursive: true }).catch(() => undefined);
    },
  };
}

/** The whole content of the object at `p`. */
export async function readAll(s: MemoryStorage, p: string): Promise<Buffer> {
  const h = await s.openRead(p);
  try {
    return await h.read(0, h.size);
  } finally {
    await h.close();
  }
}
