// What every command that reads a source accepts: the source forms and the
// credential options for network sources (secrets only from files).
import type { Argv } from 'yargs';

export const SOURCE_FORMS = 'disk image path (raw qcow2 vmdk vhd vhdx vdi), nbd://HOST[:PORT]/EXPORT, nbds://…, nbd+unix:///EXPORT?socket=PATH or iscsi://[USER@]HOST[:PORT]/IQN/LUN';

export const credentialOptions = <T>(y: Argv<T>) => y
  .option('chap-secret-file', { type: 'string', describe: 'iSCSI: file (mode 600) holding the CHAP password of USER in iscsi://USER@…' })
  .option('mutual-chap-secret-file', { type: 'string', describe: "iSCSI mutual CHAP: file (mode 600) holding the target's own account as one line USER:PASSWORD" })
  .option('tls-psk-file', { type: 'string', describe: "NBD: TLS pre-shared key file (mode 600) of 'username:hexkey' lines, as psktool writes" })
  .option('tls-certs', { type: 'string', describe: 'NBD: x509 TLS directory with ca-cert.pem (and client-cert.pem, client-key.pem mode 600 if the server wants them)' });
