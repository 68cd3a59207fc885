// The registry of file-system modules, by blkid TYPE.
import { btrfsModule } from './btrfs.js';
import { extModule } from './ext.js';
import { ntfsModule } from './ntfs.js';
import { swapModule } from './swap.js';
import { vfatModule } from './vfat.js';
import { xfsModule } from './xfs.js';
import type { FsModule } from './types.js';

const MODULES: FsModule[] = [extModule, xfsModule, btrfsModule, vfatModule, ntfsModule, swapModule];

export function fsModuleFor(type: string | undefined): FsModule | undefined {
  return type ? MODULES.find(m => m.types.includes(type)) : undefined;
}

export const SUPPORTED_FS = MODULES.flatMap(m => m.types);
