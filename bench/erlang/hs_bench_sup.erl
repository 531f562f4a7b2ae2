%% Supervisor for child_restart (one permanent hs_bench_gs worker that
%% notifies the test process from init) and, as an application callback
%% module, the top supervisor of the hs_bench_node app used by node_stop_10k.
-module(hs_bench_sup).
-behaviour(supervisor).
-behaviour(application).
-export([start_link/1]).
-export([init/1, start/2, prep_stop/1, stop/1]).

start_link(Arg) -> supervisor:start_link(?MODULE, Arg).

%% application callbacks (node_stop_10k child node)
start(_Type, _Args) ->
    N = case os:getenv("HS_BENCH_CHILDREN") of
            false -> 10000;
            S -> list_to_integer(S)
        end,
    start_link({node, N}).

%% prep_stop/1 runs just before the application's supervision tree is
%% shut down, stop/1 just after; the timestamps let the benchmark separate
%% the tree shutdown from the rest of init:stop().
prep_stop(State) ->
    io:format("prep_stop ~w~n", [erlang:monotonic_time(microsecond)]),
    State.
stop(_) ->
    io:format("app_stopped ~w~n", [erlang:monotonic_time(microsecond)]),
    ok.

init({restart, Test}) ->
    {ok, {#{strategy => one_for_one, intensity => 1000000, period => 1},
          [#{id => w,
             start => {hs_bench_gs, start_link, [{notify, Test}]},
             restart => permanent,
             shutdown => brutal_kill}]}};
init({node, N}) ->
    {ok, {#{strategy => one_for_one, intensity => 10, period => 1},
          [#{id => I,
             start => {hs_bench_gs, start_link, [0]},
             restart => permanent}
           || I <- lists:seq(1, N)]}}.
