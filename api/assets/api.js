// Requests to the statscache API the page is served by (same origin, no CDN).

// The most pages of 100 rows read for one chart or list: a bound on what one view costs.
export const MAX_PAGES = 50;

/** The query string of `params`, leaving out null and undefined values. */
export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined) {
      search.append(name, String(value));
    }
  }
  return search.toString();
}

/** GET `path` with `params` as JSON; throws with the API's message on an error status. */
export async function getJson(path, params = {}) {
  // no-cache: revalidated every time (a 304 when unchanged), as the API allows caching for
  // 30 s and a live page must not show an answer older than the change it was told of.
  const response = await fetch(`${path}?${query(params)}`, {
    headers: { Accept: "application/json" },
    cache: "no-cache",
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      message = (await response.json()).message || message;
    } catch {
      // Not JSON: the status is all there is to say.
    }
    throw new Error(`${path}: ${message}`);
  }
  return response.json();
}

/**
 * Every row of a statistic, page after page (at most MAX_PAGES). Returns the rows and whether
 * pages were left out.
 */
export async function allRows(plugin, params) {
  const rows = [];
  const path = `/api/${encodeURIComponent(plugin)}`;
  for (let page = 1; page <= MAX_PAGES; page += 1) {
    const answer = await getJson(path, { ...params, rows_per_page: 100, page });
    rows.push(...answer.rows);
    if (page >= answer.pages) {
      return { rows, truncated: false };
    }
  }
  return { rows, truncated: true };
}

/**
 * Calls `onChange` whenever the answer of one of `urls` changes, asking every `intervalMs`
 * with the ETag of its last answer: an unchanged statistic is a bodiless 304. Asks nothing
 * while the page is hidden.
 */
export function watch(urls, intervalMs, onChange) {
  const tags = new Map();
  async function changed(url) {
    const tag = tags.get(url);
    const headers = tag ? { "If-None-Match": tag } : {};
    // no-store: the 304 comes to this code, not to the browser's cache.
    const response = await fetch(url, { headers, cache: "no-store" });
    const newTag = response.headers.get("ETag");
    if (response.status !== 200 || newTag === tag) {
      return false;
    }
    tags.set(url, newTag);
    return tag !== undefined;
  }
  async function ask() {
    if (!document.hidden) {
      try {
        const answers = await Promise.all(urls.map(changed));
        if (answers.includes(true)) {
          onChange();
        }
      } catch (error) {
        // The API is away for a moment: ask again at the next turn.
        console.warn("live update failed", error);
      }
    }
    setTimeout(ask, intervalMs);
  }
  ask();
}
