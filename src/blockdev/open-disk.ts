// An opened disk: the one shape every layer passes around, from the block
// adapter (blockdev/) and the sources (sources/open.ts, sources/network.ts) up.
import type { ImageInfo } from './qemu-img.js';

export interface OpenDisk {
  /** a plain file holding the disk's bytes */
  file: string;
  size: number;
  format: string;
  describe: string;
  info?: ImageInfo;
  /** network sources: the remote bytes' own format (file is already decoded, so format is raw) */
  sourceFormat?: string;
  /** each small read is a round trip to a server: worth reading a file system's used ranges ahead of a copy */
  remote?: boolean;
}
