// Text for times, ages and numbers, in UTC like the API.

const BUCKET_SECONDS = { minute: 60, hour: 3600, day: 86400, week: 604800 };

/** `seconds` (epoch) as text as fine as `bucket` needs, in UTC. */
export function timeLabel(seconds, bucket) {
  const iso = new Date(seconds * 1000).toISOString();
  switch (bucket) {
    case "minute":
    case "hour":
      return `${iso.slice(0, 10)} ${iso.slice(11, 16)}`;
    case "day":
    case "week":
      return iso.slice(0, 10);
    case "month":
      return iso.slice(0, 7);
    default:
      return `${iso.slice(0, 10)} ${iso.slice(11, 19)}`;
  }
}

/** The end (exclusive) of the bucket starting at `start`. */
export function bucketEnd(start, bucket) {
  if (bucket === "month") {
    const date = new Date(start * 1000);
    return Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 1) / 1000;
  }
  return start + BUCKET_SECONDS[bucket];
}

/** The next finer bucket, for zooming into one period. */
export function finerBucket(bucket) {
  return { month: "day", week: "day", day: "hour", hour: "minute", minute: "minute" }[bucket];
}

/** "3 days ago" for an epoch time, against `now` (epoch seconds). */
export function age(seconds, now) {
  const elapsed = Math.max(0, now - seconds);
  const units = [
    ["year", 31557600],
    ["month", 2629800],
    ["day", 86400],
    ["hour", 3600],
    ["minute", 60],
  ];
  for (const [name, length] of units) {
    const count = Math.floor(elapsed / length);
    if (count >= 1) {
      return `${count} ${name}${count === 1 ? "" : "s"} ago`;
    }
  }
  return "just now";
}

/** An `<input type="datetime-local">` value (UTC) as epoch seconds, or null when empty. */
export function inputToEpoch(value) {
  if (!value) {
    return null;
  }
  // "2019-08-06T19:06" or, with seconds, "2019-08-06T19:06:17": read as UTC.
  const epoch = Date.parse(value.length === 16 ? `${value}:00Z` : `${value}Z`);
  return Number.isNaN(epoch) ? null : Math.floor(epoch / 1000);
}

/** Epoch seconds as an `<input type="datetime-local">` value (UTC, to the minute). */
export function epochToInput(seconds) {
  if (seconds === null) {
    return "";
  }
  return new Date(seconds * 1000).toISOString().slice(0, 16);
}
