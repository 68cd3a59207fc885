// One recorded change of a re-fit: which guest file, what it held, what it
// holds now and why. The report of `ferry reconfigure` is a list of these.
export interface Change {
  /** guest path */
  file: string;
  before: string;
  after: string;
  reason: string;
}
