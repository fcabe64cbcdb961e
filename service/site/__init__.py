"""The results site: server-rendered pages over the same services and visibility rules as the API
(leaderboards, job pages, sign-in with a session cookie). See README, "The results site"."""
