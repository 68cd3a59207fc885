// The API's contract: the JSON schemas fastify validates requests with, and
// the OpenAPI 3.1 document (GET /openapi.json) built from the same objects, so
// the description cannot drift from what the server checks. The schemas stay
// within what both ajv's draft-07 and JSON Schema 2020-12 (OpenAPI 3.1) read
// alike: no $ref inside the route schemas, only in the document.
// The server refuses to start if a route is missing here (server.ts, onReady).
import type { JobState } from '../jobs/types.js';
import { MACHINE_STATES } from '../machines/types.js';

export const JOB_STATES: readonly JobState[] = ['queued', 'running', 'done', 'failed', 'cancelled'];
export const TERMINAL_STATES: readonly JobState[] = ['done', 'failed', 'cancelled'];

const str = (description: string, extra: Record<string, unknown> = {}) => ({ type: 'string', minLength: 1, description, ...extra });

/** POST /jobs body: the shape only; the runner's validateSpec checks the meaning (paths, sizes, profiles). */
export const jobSpecSchema = {
  type: 'object',
  additionalProperties: false,
  // which of source, target and machine are required depends on kind: validateSpec says so field by field
  properties: {
    kind: {
      type: 'string', enum: ['convert', 'deploy', 'capture', 'diff', 'delta-apply', 'factory-build'],
      description: 'default convert; deploy: source onto machine; capture: machine into target; '
        + 'diff: source (image A) against changed (image B), the delta file into target if given (`ferry diff`); '
        + 'delta-apply: delta onto source, written into the new qcow2 overlay target (`ferry delta apply`); '
        + 'factory-build: recipe (`ferry factory build`). The job\'s result is the command\'s --json report',
    },
    source: str('a disk image path or a network URL (nbd://, nbds://, nbd+unix://, iscsi://); not in a capture; diff, delta-apply: the base image (a path)'),
    target: str('the image to write; not in a deploy; diff: the .ferrydelta to write (optional); delta-apply: the new qcow2 overlay'),
    changed: str('diff: the changed image compared with source (a path)'),
    paths: { type: 'array', items: { type: 'string', minLength: 1 }, description: "diff: only these guest paths, globs such as '/etc/**'" },
    delta: str('delta-apply: the .ferrydelta file (a path)'),
    recipe: str('factory-build: the recipe YAML (a path; its output is the new image, added to the catalog)'),
    machine: str('deploy, capture: the machine id (GET /machines)'),
    disk: str("deploy, capture: which of the machine's disks (name, path, serial, WWN or model)"),
    customize: {
      type: 'object',
      additionalProperties: false,
      description: 'convert, deploy: the identity the image gets on the way, as `ferry customize` gives it (a deploy always gets a new identity)',
      properties: {
        hostname: str('the new hostname'),
        ip: { type: 'array', items: { type: 'string' }, description: 'IF=ADDRESS/PREFIX[,gw=G][,dns=D]' },
        dhcp: { type: 'array', items: { type: 'string' }, description: 'interfaces that take DHCP' },
        newIdentity: { type: 'boolean', description: 'empty machine-id (systemd makes one at first boot), SSH host keys made anew at first boot, no D-Bus id, random seed, DHCP leases or persistent-net rules' },
        sshAuthorizedKey: {
          type: 'object', additionalProperties: false, required: ['user', 'keys'],
          description: "public keys appended to the guest user's ~/.ssh/authorized_keys",
          properties: { user: str('a user of the guest (/etc/passwd)'), keys: { type: 'array', minItems: 1, items: { type: 'string' }, description: 'OpenSSH public key lines' } },
        },
        timezone: str('a zone of the guest\'s tzdata, e.g. Europe/Berlin'),
        domainJoin: str('Windows: DOMAIN[,ou=OU][,user=USER,password-file=FILE] as --domain-join; FILE (mode 0600) is read on the host that runs the job, the password goes only into the answer file'),
        run: { type: 'array', items: { type: 'string' }, description: 'registered tools (ferry tools) run once at first boot, NAME[@VERSION], as --run' },
      },
    },
    format: { type: 'string', enum: ['qcow2', 'raw', 'vmdk', 'vhdx', 'vdi'], description: 'default: from the extension, else qcow2' },
    size: { type: ['string', 'integer'], minLength: 1, minimum: 1, description: 'target disk size, e.g. 8G, or bytes (default: the source size)' },
    profile: str('re-fit the guest to this hardware profile'),
    mac: str("with profile: the new NIC's MAC"),
    firmware: { type: 'string', enum: ['bios', 'uefi'], description: "uefi: a BIOS/MBR Linux guest becomes GPT with an EFI system partition and GRUB for UEFI (bios: keep the source's)" },
    options: {
      type: 'object',
      additionalProperties: false,
      properties: {
        mode: { type: 'string', enum: ['rebuild', 'clone', 'block'] },
        verify: { type: 'boolean' },
        force: { type: 'boolean', description: 'convert: replace the target; delta-apply: apply over conflicts' },
        inventory: str("a P2V agent's inventory.json"),
        forceNtfsDirty: { type: 'boolean', description: 'copy an NTFS volume left dirty or hibernated as it is (NTFS_NOT_CLEAN otherwise)' },
      },
    },
    credentials: {
      type: 'object',
      additionalProperties: false,
      description: 'paths of secret files (mode 0600) on the server, never the secrets',
      properties: {
        chapSecretFile: str('iSCSI CHAP secret file'),
        mutualChapSecretFile: str('iSCSI mutual CHAP secret file'),
        tlsPskFile: str('NBD TLS-PSK key file'),
        tlsCerts: str('NBD x509 credentials directory'),
      },
    },
    requires: {
      type: 'array', items: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' },
      description: 'fleet: only a worker with every one of these tags (ferry worker --tag) runs the job',
    },
    register: {
      type: 'object',
      additionalProperties: false,
      required: ['libvirt', 'name'],
      description: 'register the verified target as a libvirt domain',
      properties: {
        libvirt: str('libvirt URI, e.g. qemu:///system'),
        name: str('domain name (must not be taken)'),
        memory: str('e.g. 2G'),
        cpus: { type: 'integer', minimum: 1 },
        start: { type: 'boolean' },
      },
    },
  },
} as const;

export const idParamsSchema = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', minLength: 1, maxLength: 200 } },
} as const;

export const listQuerySchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    state: { type: 'string', enum: JOB_STATES },
    // a query string is text (the API never coerces types): digits only
    limit: { type: 'string', pattern: '^[0-9]{1,6}$', description: 'at most this many jobs (a page); `total` then says how many match' },
    offset: { type: 'string', pattern: '^[0-9]{1,9}$', description: 'skip this many first (with limit: the page)' },
    order: { type: 'string', enum: ['oldest', 'newest'], description: 'default oldest first' },
  },
} as const;

const oneOrMore = (description: string) => ({ type: ['string', 'array'], minLength: 1, items: { type: 'string', minLength: 1 }, description });

/** GET /images: the filters of `ferry images search` (repeat a list one: ?tag=a&tag=b) */
export const imagesQuerySchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    os: { type: 'string', description: 'linux or windows' },
    distro: { type: 'string', description: 'os-release ID: debian, ubuntu, rhel, rocky, …' },
    version: oneOrMore("OS version comparison: '>=12', '<13', '12'; repeat for a range"),
    kernel: oneOrMore("a kernel's version comparison: '>=6.1'"),
    hasDriver: oneOrMore('a storage or network kernel module, or a Windows driver or service (repeat: all of them)'),
    firmware: { type: 'string', description: 'bios or uefi' },
    tag: oneOrMore('a tag (repeat: all of them)'),
  },
} as const;

export const imageParamsSchema = {
  type: 'object', required: ['name'],
  properties: { name: { type: 'string', minLength: 1, maxLength: 128 } },
} as const;

/** GET /drivers: the filters of `ferry drivers list` */
export const driversQuerySchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    os: { type: 'string', description: "linux, windows, or a release: '2003', 'debian 12', 'rhel'" },
    component: { type: 'string', description: 'virtio_blk, viostor.sys, hal.dll …' },
    arch: { type: 'string' },
    kernel: { type: 'string', description: 'modules built for this kernel release (uname -r)' },
  },
} as const;

export const logsQuerySchema = {
  type: 'object',
  additionalProperties: false,
  // a query string is text (the API never coerces types): digits only
  properties: { after: { type: 'string', pattern: '^[0-9]{1,15}$', description: 'only lines numbered above this (for polling)' } },
} as const;

export const waitQuerySchema = {
  type: 'object',
  additionalProperties: false,
  properties: { wait: { type: 'string', pattern: '^[0-9]{1,4}$', description: 'seconds to wait for work (at most 60; default 20)' } },
} as const;

export const bootQuerySchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    mac: { type: 'string', maxLength: 64, description: "the booting NIC's MAC (iPXE ${net0/mac})" },
    uuid: { type: 'string', maxLength: 64, description: 'the SMBIOS UUID (iPXE ${uuid})' },
  },
} as const;

const fieldError = {
  type: 'object', required: ['field', 'message'],
  properties: { field: { type: 'string', description: "dotted path in the spec, e.g. 'register.name'" }, message: { type: 'string' } },
};

const errorBody = {
  type: 'object', required: ['error'],
  properties: {
    error: { type: 'string', description: 'a code: UNAUTHORIZED, JOB_NOT_FOUND, JOB_FINISHED, BAD_SPEC, BAD_REQUEST, or a Ferry error code' },
    message: { type: 'string' },
    fieldErrors: { type: 'array', items: { $ref: '#/components/schemas/FieldError' } },
  },
};

const stepRecord = {
  type: 'object', required: ['name', 'state'],
  properties: {
    name: { type: 'string' },
    state: { type: 'string', enum: ['pending', 'running', 'done', 'failed'] },
    startedAt: { type: 'string', format: 'date-time' },
    endedAt: { type: 'string', format: 'date-time' },
    checkpoint: { description: 'what a later step or a resume needs' },
  },
};

const jobRecord = {
  type: 'object',
  required: ['id', 'state', 'spec', 'sourceHost', 'steps', 'createdAt', 'updatedAt', 'attempts'],
  properties: {
    id: { type: 'string' },
    state: { type: 'string', enum: JOB_STATES },
    spec: { $ref: '#/components/schemas/JobSpec' },
    sourceHost: { type: 'string', description: "the source host, for the per-host bound ('local' for files)" },
    steps: { type: 'array', items: { $ref: '#/components/schemas/StepRecord' } },
    error: {
      type: 'object', required: ['code', 'message', 'exitCode'],
      properties: { code: { type: 'string' }, message: { type: 'string' }, exitCode: { type: 'integer' } },
    },
    result: { description: "the conversion's result (as `ferry convert --json` prints it)" },
    createdAt: { type: 'string', format: 'date-time' },
    updatedAt: { type: 'string', format: 'date-time' },
    attempts: { type: 'integer' },
  },
};

const progressEvent = {
  type: 'object', required: ['jobId', 'type', 'at'],
  properties: {
    jobId: { type: 'string' },
    type: { type: 'string', enum: ['step', 'progress', 'state', 'log'] },
    step: { type: 'string' },
    state: { type: 'string', enum: JOB_STATES },
    bytes: { type: 'integer' },
    total: { type: 'integer' },
    rate: { type: 'number', description: 'bytes per second over the last few seconds' },
    etaSeconds: { type: 'number' },
    message: { type: 'string' },
    at: { type: 'string', format: 'date-time' },
  },
};

const json = (schema: unknown) => ({ 'application/json': { schema } });
const ref = (name: string) => ({ $ref: `#/components/schemas/${name}` });
const err = (description: string) => ({ description, content: json(ref('Error')) });
const idParam = { name: 'id', in: 'path', required: true, schema: { type: 'string' } };
const common = { 401: err('no bearer token, or a wrong one') };

const machineRecord = {
  type: 'object',
  required: ['id', 'state', 'smbiosUuid', 'serial', 'macs', 'disks', 'bootTarget', 'createdAt', 'updatedAt'],
  properties: {
    id: { type: 'string', description: 'm-<8 hex>' },
    state: { type: 'string', enum: MACHINE_STATES },
    smbiosUuid: { type: ['string', 'null'] },
    serial: { type: ['string', 'null'], description: 'the SMBIOS system serial number' },
    macs: { type: 'array', items: { type: 'string' } },
    disks: {
      type: 'array',
      items: { type: 'object', properties: { path: { type: ['string', 'null'] }, sizeBytes: { type: ['integer', 'null'] }, model: { type: ['string', 'null'] }, serial: { type: ['string', 'null'] } } },
    },
    bootTarget: { type: 'string', enum: ['agent', 'disk'] },
    peer: { type: ['string', 'null'], description: 'the address the agent last spoke from' },
    jobId: { type: ['string', 'null'] },
    image: { type: ['string', 'null'] },
    work: { description: "the agent's pending work (an export's key only as the path of its 0600 file)" },
    bootTokenPending: { type: 'boolean' },
    createdAt: { type: 'string', format: 'date-time' },
    updatedAt: { type: 'string', format: 'date-time' },
    lastSeenAt: { type: ['string', 'null'], format: 'date-time' },
    inventory: { description: 'the last inventory the agent sent (GET /machines/{id} only)' },
  },
};

const agentWork = {
  type: 'object', required: ['action'],
  properties: {
    action: { type: 'string', enum: ['wait', 'export', 'unexport', 'boot-disk'] },
    ticket: { type: 'string' }, disk: { type: 'string' }, writable: { type: 'boolean' }, port: { type: 'integer' },
    exportName: { type: 'string' }, pskIdentity: { type: 'string' }, pskKey: { type: 'string', description: '64 hex digits' },
  },
};

const text = (description: string) => ({ description, content: { 'text/plain': { schema: { type: 'string' } } } });
const octets = (description: string) => ({ description, content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } });
const agentFile = (name: string) => ({
  get: {
    operationId: `agent${name === 'vmlinuz' ? 'Kernel' : 'Initrd'}`, summary: `the agent's ${name} (from the agent dir)`, security: [],
    responses: { 200: octets(name), 503: err("the agent is not built (AGENT_NOT_BUILT): run 'ferry agent build'") },
  },
});

/** the machine registry's routes (src/api/machines.ts; the protocol: src/agent/README.md) */
function machinePaths(): Record<string, unknown> {
  const agent = [{ agent: [] }];
  const unauth = (who: string) => ({ 401: err(`no ${who}, or a wrong one`) });
  return {
    '/machines/register': {
      post: {
        operationId: 'registerMachine', summary: "an agent registers its machine (known by SMBIOS UUID, else by any MAC)", security: [{ enrol: [] }],
        requestBody: { required: true, content: json({ type: 'object', description: "the inventory as 'ferry-p2v-agent inventory' writes it (ferryInventory: 1)" }) },
        responses: {
          200: { description: 'a known machine, updated; a new agent token', content: json(ref('Registration')) },
          201: { description: 'a new machine', content: json(ref('Registration')) },
          400: err('not an inventory (INVENTORY_INVALID); nothing recorded'),
          ...unauth('enrolment token'),
        },
      },
    },
    '/machines/{id}/work': {
      get: {
        operationId: 'agentWork', summary: 'long poll: the work for the agent, or `wait` after `wait` seconds (also when the server stops)', security: agent,
        parameters: [idParam, { name: 'wait', in: 'query', required: false, schema: waitQuerySchema.properties.wait }],
        responses: { 200: { description: 'the work (the same until the agent reports it done)', content: json(ref('AgentWork')) }, 400: err('a bad `wait`'), ...unauth('agent token') },
      },
    },
    '/machines/{id}/status': {
      post: {
        operationId: 'agentStatus', summary: "the agent reports on its work", security: agent, parameters: [idParam],
        requestBody: {
          required: true,
          content: json({ type: 'object', required: ['state'], properties: { ticket: { type: 'string' }, state: { type: 'string', enum: ['exporting', 'unexported', 'failed', 'booting-disk'] }, message: { type: 'string' } } }),
        },
        responses: { 204: { description: 'recorded' }, 400: err('not a status (STATUS_INVALID)'), ...unauth('agent token') },
      },
    },
    '/machines/{id}/booted': {
      post: {
        operationId: 'machineBooted', summary: 'a deployed system reports its first boot (once per deploy)', security: [{ boot: [] }], parameters: [idParam],
        responses: { 204: { description: 'recorded in the history with the address it came from' }, ...unauth('boot token (or one already used)') },
      },
    },
    '/boot/ipxe': {
      get: {
        operationId: 'ipxeScript', summary: "the iPXE script for a machine: the agent, or sanboot from its disk when its boot target is 'disk'", security: [],
        parameters: [
          { name: 'mac', in: 'query', required: false, schema: bootQuerySchema.properties.mac },
          { name: 'uuid', in: 'query', required: false, schema: bootQuerySchema.properties.uuid },
        ],
        responses: { 200: text('#!ipxe …'), 400: err('a Host header that is not HOST[:PORT] (give ferry serve --public-url)') },
      },
    },
    '/boot/vmlinuz': agentFile('vmlinuz'),
    '/boot/initrd.img': agentFile('initrd.img'),
    '/machines': {
      get: {
        operationId: 'listMachines', summary: 'the registered machines, oldest first (without their inventories)',
        responses: { 200: { description: 'the machines', content: json({ type: 'object', required: ['machines'], properties: { machines: { type: 'array', items: ref('Machine') } } }) }, ...common },
      },
    },
    '/machines/{id}': {
      get: {
        operationId: 'getMachine', summary: 'one machine with its inventory and history', parameters: [idParam],
        responses: {
          200: { description: 'the machine', content: json({ type: 'object', required: ['machine', 'history'], properties: { machine: ref('Machine'), history: { type: 'array', items: ref('MachineHistory') } } }) },
          404: err('no such machine (MACHINE_NOT_FOUND)'),
          ...common,
        },
      },
      delete: {
        operationId: 'forgetMachine', summary: 'forget a machine (it registers as new when its agent boots again)', parameters: [idParam],
        responses: { 204: { description: 'forgotten' }, 404: err('no such machine (MACHINE_NOT_FOUND)'), 409: err('a job holds it (MACHINE_BUSY)'), ...common },
      },
    },
  };
}

const machineSchemas = {
  Machine: machineRecord,
  MachineHistory: {
    type: 'object', required: ['at', 'event', 'state'],
    properties: { at: { type: 'string', format: 'date-time' }, event: { type: 'string' }, state: { type: 'string', enum: MACHINE_STATES }, image: { type: ['string', 'null'] }, jobId: { type: ['string', 'null'] }, detail: { type: ['string', 'null'] } },
  },
  Registration: {
    type: 'object', required: ['id', 'agentToken', 'state'],
    properties: { id: { type: 'string' }, agentToken: { type: 'string', description: '64 hex; the previous one stops working' }, state: { type: 'string', enum: MACHINE_STATES } },
  },
  AgentWork: agentWork,
};

const machineSecuritySchemes = {
  enrol: { type: 'http', scheme: 'bearer', description: 'the token in $FERRY_HOME/enrol-token (POST /machines/register only)' },
  agent: { type: 'http', scheme: 'bearer', description: "the agent token of the machine's last registration" },
  boot: { type: 'http', scheme: 'bearer', description: 'the one-time boot token a deploy put into the system' },
};

/** The document; `withMachines`: the server has the machine registry's routes. */
export function openApiDocument(version: string, withMachines = false): Record<string, unknown> {
  const doc = jobsDocument(version);
  if (!withMachines) return doc;
  const components = doc.components as { securitySchemes: object; schemas: object };
  return {
    ...doc,
    paths: { ...(doc.paths as object), ...machinePaths() },
    components: { securitySchemes: { ...components.securitySchemes, ...machineSecuritySchemes }, schemas: { ...components.schemas, ...machineSchemas } },
  };
}

function jobsDocument(version: string): Record<string, unknown> {
  return {
    openapi: '3.1.0',
    info: {
      title: 'Ferry job service',
      version,
      description: 'Submit, watch, cancel and retry machine conversions. Every request needs `Authorization: Bearer TOKEN`; '
        + '`ferry serve` writes the token to $FERRY_HOME/api-token (mode 0600) on its first start. The console (GET /) may use '
        + 'the session cookie of POST /login instead; a state-changing request with the cookie must carry this server\'s Origin '
        + '(403 CROSS_ORIGIN otherwise).',
    },
    security: [{ bearer: [] }],
    paths: {
      '/jobs': {
        post: {
          operationId: 'submitJob', summary: 'queue a job: a conversion, deploy, capture, diff, delta apply or factory build',
          requestBody: { required: true, content: json(ref('JobSpec')) },
          responses: {
            201: { description: 'queued; Location names the job', content: json(ref('JobRecord')), headers: { Location: { schema: { type: 'string' } } } },
            400: { description: "a bad spec: error 'BAD_SPEC' and one entry per wrong field", content: json(ref('Error')) },
            ...common,
          },
        },
        get: {
          operationId: 'listJobs', summary: 'jobs, newest last',
          parameters: Object.entries(listQuerySchema.properties).map(([name, schema]) => ({ name, in: 'query', required: false, schema })),
          responses: {
            200: { description: 'the jobs; `total`: how many match (with limit/offset, more than the page)', content: json({ type: 'object', required: ['jobs', 'total'], properties: { jobs: { type: 'array', items: ref('JobRecord') }, total: { type: 'integer' } } }) },
            400: err('an unknown state'),
            ...common,
          },
        },
      },
      '/jobs/{id}': {
        get: {
          operationId: 'getJob', summary: 'one job', parameters: [idParam],
          responses: { 200: { description: 'the job', content: json(ref('JobRecord')) }, 404: err('no such job (JOB_NOT_FOUND)'), ...common },
        },
      },
      '/jobs/{id}/events': {
        get: {
          operationId: 'jobEvents',
          summary: 'server-sent events: the job as it is now (event `job`), then its progress events until it ends',
          description: 'The stream starts with `event: job` holding the JobRecord and, for a running job, its latest `progress` event; '
            + 'then each ProgressEvent as `event: step|progress|state|log` with the event as JSON data; comments (`: keep-alive`) keep idle '
            + 'connections open. It ends after the `state` event that finishes the job (done, failed or cancelled). '
            + 'A reconnect (Last-Event-ID) to a finished job gets 204, which stops an EventSource from retrying.',
          parameters: [idParam],
          responses: {
            200: { description: 'the event stream', content: { 'text/event-stream': { schema: { type: 'string' }, 'x-event-data': ref('ProgressEvent') } } },
            204: { description: 'a reconnect to a job that has ended' },
            404: err('no such job (JOB_NOT_FOUND)'),
            ...common,
          },
        },
      },
      '/jobs/{id}/cancel': {
        post: {
          operationId: 'cancelJob', summary: 'cancel a queued or running job', parameters: [idParam],
          responses: {
            202: { description: 'cancelling: the job ends as cancelled once its step has released what it holds', content: json(ref('JobRecord')) },
            404: err('no such job (JOB_NOT_FOUND)'),
            409: err('the job has already ended (JOB_FINISHED)'),
            ...common,
          },
        },
      },
      '/jobs/{id}/retry': {
        post: {
          operationId: 'retryJob', summary: 'queue a failed or cancelled job again; it starts from the beginning', parameters: [idParam],
          responses: {
            202: { description: 'queued again', content: json(ref('JobRecord')) },
            404: err('no such job (JOB_NOT_FOUND)'),
            409: err('the job is not failed or cancelled (JOB_STATE_CONFLICT)'),
            ...common,
          },
        },
      },
      '/jobs/{id}/logs': {
        get: {
          operationId: 'jobLogs', summary: "the job's log lines, numbered from 1",
          parameters: [idParam, { name: 'after', in: 'query', required: false, schema: logsQuerySchema.properties.after }],
          responses: {
            200: {
              description: 'the lines',
              content: json({ type: 'object', required: ['lines'], properties: { lines: { type: 'array', items: { type: 'object', required: ['n', 'line'], properties: { n: { type: 'integer' }, line: { type: 'string' } } } } } }),
            },
            400: err('a bad `after`'),
            404: err('no such job (JOB_NOT_FOUND)'),
            ...common,
          },
        },
      },
      '/events': {
        get: {
          operationId: 'allEvents',
          summary: "server-sent events of every job: `state` and `step` events as they happen, each running job's `progress` at most once a second (no log lines)",
          description: 'For a table of many jobs over one connection (a browser opens at most six to one server). '
            + 'Starts with `event: hello`; comments (`: keep-alive`) keep idle connections open; it never ends by itself.',
          responses: { 200: { description: 'the event stream', content: { 'text/event-stream': { schema: { type: 'string' }, 'x-event-data': ref('ProgressEvent') } } }, ...common },
        },
      },
      '/images': {
        get: {
          operationId: 'searchImages', summary: 'catalog images matching every filter given (as `ferry images search`); changed images are inspected again first',
          parameters: Object.entries(imagesQuerySchema.properties).map(([name, schema]) => ({ name, in: 'query', required: false, schema })),
          responses: {
            200: { description: 'the images, and those missing or unreadable now', content: json({ type: 'object', required: ['images', 'refreshed', 'missing', 'failed'], properties: { images: { type: 'array', items: ref('ImageSummary') }, refreshed: { type: 'array', items: { type: 'string' } }, missing: { type: 'array' }, failed: { type: 'array' } } }) },
            400: err('a bad filter (BAD_FILTER)'),
            ...common,
          },
        },
      },
      '/images/{name}': {
        get: {
          operationId: 'showImage', summary: "an image's inspection report (as `ferry images show`), what each kernel's initramfs lacks for each profile, and its history",
          parameters: [{ name: 'name', in: 'path', required: true, schema: { type: 'string' } }],
          responses: {
            200: {
              description: 'the image', content: json({
                allOf: [ref('ImageSummary')],
                properties: {
                  report: { description: 'the inspection report (as `ferry inspect --json`)' },
                  refreshed: { type: 'boolean' },
                  initramfs: { type: 'array', items: { type: 'object', properties: { kernel: { type: 'string' }, profile: { type: 'string' }, lacks: { type: 'array', items: { type: 'string' } } } } },
                  history: { type: 'array', items: { type: 'object', required: ['at', 'event'], properties: { at: { type: 'string' }, event: { type: 'string' }, jobId: { type: 'string' } } } },
                },
              }),
            },
            404: err('no such image (IMAGE_NOT_FOUND)'),
            422: err('its source is missing or cannot be inspected now'),
            ...common,
          },
        },
      },
      '/drivers': {
        get: {
          operationId: 'listDrivers', summary: 'the files of the driver store (as `ferry drivers list`)',
          parameters: Object.entries(driversQuerySchema.properties).map(([name, schema]) => ({ name, in: 'query', required: false, schema })),
          responses: { 200: { description: 'the files', content: json({ type: 'object', required: ['files'], properties: { files: { type: 'array', items: { type: 'object' } } } }) }, ...common },
        },
      },
      '/profiles': {
        get: {
          operationId: 'listProfiles', summary: 'the hardware profiles (as `ferry profiles list`)',
          responses: { 200: { description: 'the profiles', content: json({ type: 'object', required: ['profiles'], properties: { profiles: { type: 'array', items: { type: 'object' } } } }) }, ...common },
        },
      },
      '/': {
        get: { operationId: 'console', summary: 'the console (a page for people); logs in with the API token', security: [], responses: { 200: { description: 'HTML', content: { 'text/html': { schema: { type: 'string' } } } } } },
      },
      '/assets/{name}': {
        get: {
          operationId: 'consoleAsset', summary: "the console's files, named by their content hash (cached for a year)", security: [],
          parameters: [{ name: 'name', in: 'path', required: true, schema: { type: 'string' } }],
          responses: { 200: { description: 'the file' }, 404: err('no such file') },
        },
      },
      '/login': {
        post: {
          operationId: 'login', summary: 'trade the API token for a session cookie (HttpOnly, SameSite=Strict, Secure under TLS); only from a page of this server (Origin)', security: [],
          requestBody: { required: true, content: json({ type: 'object', required: ['token'], properties: { token: { type: 'string' } } }) },
          responses: { 204: { description: 'logged in: Set-Cookie ferry_session' }, 401: err('a wrong token'), 403: err('from another origin (CROSS_ORIGIN)') },
        },
      },
      '/logout': {
        post: { operationId: 'logout', summary: 'end the session', responses: { 204: { description: 'logged out' }, ...common } },
      },
      '/session': {
        get: { operationId: 'session', summary: 'whether the cookie (or bearer token) is good', responses: { 200: { description: 'yes', content: json({ type: 'object' }) }, ...common } },
      },
      '/openapi.json': {
        get: {
          operationId: 'openApi', summary: 'this document',
          responses: { 200: { description: 'OpenAPI 3.1', content: json({ type: 'object' }) }, ...common },
        },
      },
    },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'the token in $FERRY_HOME/api-token' } },
      schemas: {
        JobSpec: jobSpecSchema,
        JobRecord: jobRecord,
        StepRecord: stepRecord,
        ProgressEvent: progressEvent,
        FieldError: fieldError,
        Error: errorBody,
        ImageSummary: {
          type: 'object', required: ['name', 'source', 'tags', 'addedAt', 'inspectedAt', 'os'],
          properties: {
            name: { type: 'string' }, source: { type: 'string' }, tags: { type: 'array', items: { type: 'string' } },
            addedAt: { type: 'string' }, inspectedAt: { type: 'string' },
            os: { type: 'array', items: { type: 'object', properties: { type: { type: 'string' }, distro: { type: 'string' }, name: { type: 'string' }, version: { type: 'string' }, patchLevel: { type: 'string' }, arch: { type: 'string' }, firmware: { type: 'string' }, kernels: { type: 'array', items: { type: 'string' } } } } },
          },
        },
      },
    },
  };
}

/** 'get /jobs/{id}' for every operation of the document */
export function documentedRoutes(doc: Record<string, unknown>): Set<string> {
  const out = new Set<string>();
  for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, unknown>>)) {
    for (const method of Object.keys(ops)) out.add(`${method.toLowerCase()} ${path}`);
  }
  return out;
}
